import Foundation
import Testing
@testable import Lab

/// The golden validator tells a regression (bytes changed, same tools) from input drift (bytes
/// changed and a recorded tool version changed), and shows a diff of the layout.
struct GoldenValidatorTests {
    @Test func regressionVersusDrift() throws {
        let suite = try ScenarioParsingTests.suite()
        let scenario = try suite.scenario(named: "whole-disk")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-golden-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // A 1 MiB disk with an MBR made by the generator's own MBR code.
        let disk = dir.appendingPathComponent("disk.raw")
        try DiskGenerator.createSparse(disk, size: 1 << 20)
        let mbr = MBRImage(bootCode: [0xEB, 0xFE], signature: 0x1234_5678, partitionType: 0x83, startLBA: 63, sectorCount: 1000)
        try DiskGenerator.copy(bytes: mbr.bytes(), into: disk, at: 0)

        func context(update: Bool, kernel: String = "6.1.1") -> CellContext {
            let options = RunOptions(goldenDirectory: dir.appendingPathComponent("Golden"), updateGolden: update, workDirectory: dir)
            let c = CellContext(scenario: scenario, target: suite.targets["kvm-virtio"]!, suite: suite, options: options)
            c.put(Artefact(role: ArtefactRole.sourceDisk, machine: "main", disk: .file(path: disk.path, format: "raw"), files: [disk.path]))
            c.generated["main"] = GeneratedMachine(machine: "main", diskPath: disk.path, volumePath: "", diskDigest: "", volumeDigest: "",
                                                   cacheKey: "", versions: ToolVersions(packages: ["linux-image-x": kernel, "e2fsprogs": "1.47"]),
                                                   rootSpec: "", kernelRelease: "", modules: .init(files: [], builtin: [], absent: []))
            return c
        }
        let v = GoldenValidator()
        #expect(try v.validate(in: context(update: true)).verdict == .pass)
        #expect(try v.validate(in: context(update: false)).verdict == .pass)

        // Flip one byte of the partition entry (the start LBA): a regression with a layout diff.
        let handle = try FileHandle(forUpdating: disk)
        try handle.seek(toOffset: 446 + 8)
        try handle.write(contentsOf: Data([64]))
        try handle.close()
        let broken = try v.validate(in: context(update: false))
        #expect(broken.verdict == .fail)
        #expect(broken.message.contains("regression"))
        #expect(broken.details?.contains("-partition 1: status 0x80 type 0x83 start LBA 63") == true)
        #expect(broken.details?.contains("+partition 1: status 0x80 type 0x83 start LBA 64") == true)

        // Same changed bytes, but the kernel package moved on: input drift, not a regression.
        let drift = try v.validate(in: context(update: false, kernel: "6.1.2"))
        #expect(drift.verdict == .drift)
        #expect(drift.message.contains("linux-image-x 6.1.1 → 6.1.2"))
    }
}
