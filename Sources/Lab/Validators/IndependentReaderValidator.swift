import Foundation
import Processes

/// An independent VHDX reader agrees: libvhdi's `vhdiinfo` opens every exposed file and reports
/// the virtual size, and the disk `vhdimount` (FUSE) shows has the expected disk's SHA-256.
public struct LibvhdiValidator: Validator {
    public let name = "libvhdi"
    public init() {}

    public func validate(in context: CellContext) throws -> StepOutcome {
        guard let fe = context.frontEnd else { return .fail("no front-end: the expose step did not run") }
        var notes: [String] = []
        for m in context.scenario.machines {
            let file = try fe.localFile(machine: m.name)
            let expected = try ExpectedDisk.path(machine: m, in: context)
            let expectedSize = (try FileManager.default.attributesOfItem(atPath: expected)[.size] as? NSNumber)?.uint64Value ?? 0
            let info = try Shell.run("vhdiinfo", [file], check: false)
            guard info.status == 0 else {
                return .fail("\(m.name): vhdiinfo exit \(info.status): \((info.stdout + info.stderr).suffix(300))", details: info.stdout + info.stderr)
            }
            let sizeLine = info.stdout.split(separator: "\n").first { $0.contains("Media size") }.map(String.init) ?? ""
            guard sizeLine.contains("(\(expectedSize) bytes)") || sizeLine.contains(" \(expectedSize) bytes") else {
                return .fail("\(m.name): vhdiinfo media size '\(sizeLine.trimmingCharacters(in: .whitespaces))' ≠ expected \(expectedSize) bytes", details: info.stdout)
            }
            let mnt = context.directory.appendingPathComponent("vhdimount-\(m.name)")
            if FrontEndProcess.isMounted(mnt.path) { _ = try? Shell.run("umount", [mnt.path], check: false) }
            try? FileManager.default.removeItem(at: mnt)
            try FileManager.default.createDirectory(at: mnt, withIntermediateDirectories: true)
            // In the foreground (-v) as our own child, kept until the digest is read; its exit is
            // watched through a pidfd, so a mount that fails is reported at once.
            let log = context.directory.appendingPathComponent("vhdimount-\(m.name).log")
            let p = try Command(["vhdimount", "-v", file, mnt.path], stdout: .file(log.path, append: false), stderr: .stdout).spawn()
            defer {
                _ = try? Shell.run("umount", [mnt.path], check: false)
                p.terminate()
                try? FileManager.default.removeItem(at: mnt)
            }
            var waited = 0.0
            while !FrontEndProcess.isMounted(mnt.path) {
                guard waited < 20, p.wait(timeout: 0.05) == nil else {
                    return .fail("\(m.name): vhdimount did not mount: \(((try? String(contentsOf: log, encoding: .utf8)) ?? "").suffix(300))")
                }
                waited += 0.05
            }
            let disk = mnt.appendingPathComponent("vhdi1")
            let got = try Digest.file(disk)
            let want = try Digest.file(URL(fileURLWithPath: expected))
            guard got == want else {
                return .fail("\(m.name): vhdimount content sha256 \(got.prefix(16)) ≠ expected disk \(want.prefix(16)) (\(expected))")
            }
            notes.append("\(m.name): vhdiinfo \(expectedSize) bytes, vhdimount content = expected (sha256 \(got.prefix(12)))")
        }
        return .pass(notes.joined(separator: "; "))
    }
}
