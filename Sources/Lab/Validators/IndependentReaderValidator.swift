import Foundation
import Processes

/// A reader we did not write agrees: the format's library from Debian (libvhdi for VHDX and VHD,
/// libvmdk for VMDK, libqcow for qcow2) opens every exposed file and reports the virtual size
/// (`vhdiinfo`, `vmdkinfo`, `qcowinfo`), and the disk its FUSE mounter shows (`vhdimount`,
/// `vmdkmount`, `qcowmount`) has the expected disk's SHA-256. VDI has no such library in Debian:
/// the validator says so (QEMU, in the qemu-img validators, is its only independent reader).
public struct IndependentReaderValidator: Validator {
    public let name = "independent-reader"
    public init() {}

    public func validate(in context: CellContext) throws -> StepOutcome {
        guard let fe = context.frontEnd else { return .fail("no front-end: the expose step did not run") }
        guard let reader = fe.format.independentReader else {
            return .pass("\(fe.format.name): Debian packages no independent reader for this format; QEMU (qemu-img check/compare) is the only one")
        }
        var notes: [String] = []
        for m in context.scenario.machines {
            let file = try fe.localFile(machine: m.name)
            let expected = try ExpectedDisk.path(machine: m, in: context)
            let expectedSize = (try FileManager.default.attributesOfItem(atPath: expected)[.size] as? NSNumber)?.uint64Value ?? 0
            let info = try Shell.run(reader.info, [file], check: false)
            guard info.status == 0 else {
                return .fail("\(m.name): \(reader.info) exit \(info.status): \((info.stdout + info.stderr).suffix(300))", details: info.stdout + info.stderr)
            }
            let sizeLine = info.stdout.split(separator: "\n").first { $0.contains("Media size") }.map(String.init) ?? ""
            guard sizeLine.contains("(\(expectedSize) bytes)") || sizeLine.contains(" \(expectedSize) bytes") else {
                return .fail("\(m.name): \(reader.info) media size '\(sizeLine.trimmingCharacters(in: .whitespaces))' ≠ expected \(expectedSize) bytes", details: info.stdout)
            }
            let mnt = context.directory.appendingPathComponent("\(reader.mount)-\(m.name)")
            if FrontEndProcess.isMounted(mnt.path) { _ = try? Shell.run("umount", [mnt.path], check: false) }
            try? FileManager.default.removeItem(at: mnt)
            try FileManager.default.createDirectory(at: mnt, withIntermediateDirectories: true)
            // In the foreground (-v) as our own child, kept until the digest is read; its exit is
            // watched through a pidfd, so a mount that fails is reported at once.
            let log = context.directory.appendingPathComponent("\(reader.mount)-\(m.name).log")
            let p = try Command([reader.mount, "-v", file, mnt.path], stdout: .file(log.path, append: false), stderr: .stdout).spawn()
            defer {
                _ = try? Shell.run("umount", [mnt.path], check: false)
                p.terminate()
                try? FileManager.default.removeItem(at: mnt)
            }
            var waited = 0.0
            while !FrontEndProcess.isMounted(mnt.path) {
                guard waited < 20, p.wait(timeout: 0.05) == nil else {
                    return .fail("\(m.name): \(reader.mount) did not mount: \(((try? String(contentsOf: log, encoding: .utf8)) ?? "").suffix(300))")
                }
                waited += 0.05
            }
            let disk = mnt.appendingPathComponent(reader.mountedFile)
            let got = try Digest.file(disk)
            let want = try Digest.file(URL(fileURLWithPath: expected))
            guard got == want else {
                return .fail("\(m.name): \(reader.mount) content sha256 \(got.prefix(16)) ≠ expected disk \(want.prefix(16)) (\(expected))")
            }
            notes.append("\(m.name): \(reader.library): \(reader.info) \(expectedSize) bytes, \(reader.mount) content = expected (sha256 \(got.prefix(12)))")
        }
        return .pass(notes.joined(separator: "; "))
    }
}
