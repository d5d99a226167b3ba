import BlockCore
import Foundation
import Testing
@testable import Lab

/// The golden verdict is keyed to inputs: the same inputs and other outputs are a regression,
/// whatever package version strings say; a generated disk that changed with the same external
/// inputs is a regression of the generator; only a changed external input is drift, named.
@Suite(.serialized)
struct GoldenValidatorTests {
    /// A scratch cell: a 1 MiB "generated" disk with an MBR made by the generator's MBR code.
    final class Fixture {
        let suite: LabSuite
        let scenario: Scenario
        let dir: URL
        let disk: URL
        var kernelImageDigest = "aaaa"
        var diskDigest = "d1"
        var packages = ["linux-image-x": "6.1.1", "e2fsprogs": "1.47.0-2+b2"]

        init() throws {
            suite = try ScenarioParsingTests.suite()
            scenario = try suite.scenario(named: "whole-disk")
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-golden-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            disk = dir.appendingPathComponent("disk.raw")
            try DiskGenerator.createSparse(disk, size: 1 << 20)
            let mbr = MBRImage(bootCode: [0xEB, 0xFE], signature: 0x1234_5678, partitionType: 0x83, startLBA: 63, sectorCount: 1000)
            try DiskGenerator.copy(bytes: mbr.bytes(), into: disk, at: 0)
        }

        deinit { try? FileManager.default.removeItem(at: dir) }

        var goldenCell: URL { dir.appendingPathComponent("Golden/whole-disk/kvm-virtio") }

        func context(update: Bool = false, scenario override: Scenario? = nil) -> CellContext {
            let options = RunOptions(goldenDirectory: dir.appendingPathComponent("Golden"), updateGolden: update, workDirectory: dir)
            let c = CellContext(scenario: override ?? scenario, target: suite.targets["kvm-virtio"]!, suite: suite, options: options)
            c.put(Artefact(role: ArtefactRole.sourceDisk, machine: "main", disk: .file(path: disk.path, format: "raw"), files: [disk.path]))
            let external = ExternalInputs(packages: packages, files: ["kernel image (cloud)": kernelImageDigest, "tool mke2fs": "bbbb"])
            c.generated["main"] = GeneratedMachine(machine: "main", diskPath: disk.path, volumePath: "", diskDigest: diskDigest, volumeDigest: "v1",
                                                   cacheKey: "", versions: ToolVersions(packages: packages),
                                                   inputs: GeneratorInputs(spec: "spec1", external: external),
                                                   rootSpec: "", kernelRelease: "", modules: .init(files: [], builtin: [], absent: []))
            return c
        }

        /// `--update-golden` for this cell as the runner does it: stage, then commit (no other
        /// validator failed).
        @discardableResult
        func record(_ v: GoldenValidator, others: [StepRecord] = []) throws -> StepOutcome {
            let c = context(update: true)
            let staged = try v.validate(in: c)
            guard let pending = c.pendingGolden else { return staged }
            return GoldenValidator.commit(pending, otherRecords: others)
        }

        /// Flips one byte of the partition entry (partition 1's start LBA 63 → 64).
        func flipStartLBA() throws {
            let handle = try FileHandle(forUpdating: disk)
            try handle.seek(toOffset: 446 + 8)
            try handle.write(contentsOf: Data([64]))
            try handle.close()
        }
    }

    @Test func sameInputsOtherOutputsIsARegressionWithALayoutDiff() throws {
        let f = try Fixture()
        let v = GoldenValidator()
        #expect(try f.record(v).verdict == .pass)
        for name in ["digests.txt", "layout.txt", "inputs.json", "versions.json"] {
            #expect(FileManager.default.fileExists(atPath: f.goldenCell.appendingPathComponent(name).path), "\(name) recorded")
        }
        #expect(try v.validate(in: f.context()).verdict == .pass)

        try f.flipStartLBA()
        let broken = try v.validate(in: f.context())
        #expect(broken.verdict == .fail)
        #expect(broken.message.hasPrefix("regression: layout differs with the same inputs"), "\(broken.message)")
        #expect(broken.details?.contains("-partition 1: status 0x80 type 0x83 start LBA 63") == true)
        #expect(broken.details?.contains("+partition 1: status 0x80 type 0x83 start LBA 64") == true)
    }

    /// The fresh-machine case: this machine's packages carry other version strings (a Debian
    /// rebuild), yet the generated disk is the same. A changed output is still a regression.
    @Test func otherPackageVersionsDoNotExcuseARegression() throws {
        let f = try Fixture()
        let v = GoldenValidator()
        try f.record(v)
        f.packages = ["linux-image-x": "6.1.2", "e2fsprogs": "1.47.0-2"]
        let unchanged = try v.validate(in: f.context())
        #expect(unchanged.verdict == .pass)
        #expect(unchanged.message.contains("recorded inputs differ, outputs identical"), "\(unchanged.message)")

        try f.flipStartLBA()
        let broken = try v.validate(in: f.context())
        #expect(broken.verdict == .fail, "\(broken.message)")
        #expect(broken.message.contains("regression"), "\(broken.message)")
    }

    /// The generated disk changed while every external input it read is the same: the
    /// generator regressed (even if version strings moved).
    @Test func generatedDiskChangedWithSameExternalInputsIsAGeneratorRegression() throws {
        let f = try Fixture()
        let v = GoldenValidator()
        try f.record(v)
        try f.flipStartLBA()
        f.diskDigest = "d2"
        let r = try v.validate(in: f.context())
        #expect(r.verdict == .fail)
        #expect(r.message.hasPrefix("regression of the generator: machine main: generated disk"), "\(r.message)")
        #expect(r.message.contains("every external input unchanged"), "\(r.message)")
    }

    /// A different kernel image made a different disk: drift, naming the input.
    @Test func changedExternalInputIsDriftNamingIt() throws {
        let f = try Fixture()
        let v = GoldenValidator()
        try f.record(v)
        try f.flipStartLBA()
        f.diskDigest = "d2"
        f.kernelImageDigest = "cccc"
        f.packages["linux-image-x"] = "6.1.2"
        let r = try v.validate(in: f.context())
        #expect(r.verdict == .drift, "\(r.message)")
        #expect(r.message.contains("kernel image (cloud) sha256 aaaa → cccc"), "\(r.message)")
        #expect(r.message.contains("package linux-image-x 6.1.1 → 6.1.2"), "\(r.message)")
        #expect(!r.message.contains("tool mke2fs"), "unchanged inputs are not named: \(r.message)")
        #expect(r.details?.contains("start LBA 64") == true)
    }

    /// The repository's own input changed (the scenario) without re-recording: a failure that
    /// says so, never drift.
    @Test func changedScenarioMakesStaleGoldens() throws {
        let f = try Fixture()
        let v = GoldenValidator()
        try f.record(v)
        try f.flipStartLBA()
        var edited = f.scenario
        edited.summary += " (edited)"
        let r = try v.validate(in: f.context(scenario: edited))
        #expect(r.verdict == .fail)
        #expect(r.message.hasPrefix("stale goldens: scenario definition changed"), "\(r.message)")
    }

    @Test func goldensWithoutInputsAreStale() throws {
        let f = try Fixture()
        let v = GoldenValidator()
        try f.record(v)
        try FileManager.default.removeItem(at: f.goldenCell.appendingPathComponent("inputs.json"))
        let r = try v.validate(in: f.context())
        #expect(r.verdict == .fail)
        #expect(r.message.contains("no inputs.json"), "\(r.message)")
    }

    @Test func pipelineInputsExplainDriftAndStaleness() {
        let machine = GoldenInputs.Machine(generator: GeneratorInputs(spec: "s", external: ExternalInputs(files: ["busybox": "b1"])),
                                           disk: "d", volume: "v")
        let base = GoldenInputs(machines: ["main": machine],
                                pipeline: .init(scenario: "sc", target: "t", drivers: nil,
                                                external: ExternalInputs(files: ["syslinux mbr.bin": "m1"])))
        #expect(base.explain(changeFrom: base) == .sameInputs)

        var newMBR = base
        newMBR.pipeline.external.files["syslinux mbr.bin"] = "m2"
        #expect(newMBR.explain(changeFrom: base) == .drift(["pipeline input syslinux mbr.bin sha256 m1 → m2"]))

        var newDrivers = base
        newDrivers.pipeline.drivers = "dr"
        #expect(newDrivers.explain(changeFrom: base) == .stale(["driver data (drivers.json) changed"]))

        var newTarget = newMBR
        newTarget.pipeline.target = "t2"
        if case .stale(let reasons) = newTarget.explain(changeFrom: base) {
            #expect(reasons == ["target profile changed"])
        } else {
            Issue.record("a changed target profile must make stale goldens, even alongside drift")
        }

        var newRecipe = base
        newRecipe.machines["main"]!.generator.recipe += 1
        newRecipe.machines["main"]!.disk = "d2"
        if case .stale(let reasons) = newRecipe.explain(changeFrom: base) {
            #expect(reasons.first?.contains("generator recipe") == true)
        } else {
            Issue.record("a new generator recipe must make stale goldens")
        }

        var onlyVersions = base
        onlyVersions.machines["main"]!.generator.external.packages["e2fsprogs"] = "1.47.0-2"
        #expect(onlyVersions.explain(changeFrom: base) == .sameInputs, "a version string with an unchanged disk explains nothing")
    }

    /// `--update-golden` stages; nothing is written until the runner commits, a cell whose other
    /// validators failed is refused, and the record shows the diff it writes.
    @Test func updateGoldenRefusesFailingCellsAndShowsTheDiff() throws {
        let f = try GoldenValidatorTests.Fixture()
        let v = GoldenValidator()
        let staged = f.context(update: true)
        _ = try v.validate(in: staged)
        #expect(staged.pendingGolden != nil)
        #expect(!FileManager.default.fileExists(atPath: f.goldenCell.appendingPathComponent("digests.txt").path), "staging writes nothing")

        let boot = StepRecord(name: "boot", kind: .validator, outcome: StepOutcome.fail("no marker"), seconds: 0)
        let refused = try f.record(v, others: [boot])
        #expect(refused.verdict == .fail && refused.message.hasPrefix("not recorded: boot failed"), "\(refused.message)")
        #expect(!FileManager.default.fileExists(atPath: f.goldenCell.appendingPathComponent("digests.txt").path))

        #expect(try f.record(v).verdict == .pass)
        try f.flipStartLBA()
        let again = try f.record(v)
        #expect(again.verdict == .pass && again.message.contains("lines changed"), "\(again.message)")
        #expect(again.details?.contains("+partition 1: status 0x80 type 0x83 start LBA 64") == true, "\(again.details ?? "")")
        // The layout is now the recorded one: the comparison is with what was written, by a new read.
        #expect(try v.validate(in: f.context()).verdict == .pass)
    }
}

/// The raw-disk layout dump reads sector 0 through DiskFormats' MBR decoding; its text is the
/// golden `layout.txt` format, so it is pinned here for a sector with every case the dump
/// distinguishes (active entry with saturated CHS, invalid status past the disk's end, a
/// non-blank entry of type 0, a blank slot).
@Suite struct RawDiskLayoutTests {
    @Test func dumpTextIsPinned() {
        var s = [UInt8](repeating: 0, count: 512)
        for i in 0..<440 { s[i] = UInt8(truncatingIfNeeded: i * 7) }
        s.putLE32(0xCAFE_F00D, at: 440)
        let e1: [UInt8] = [0x80, 0x20, 0x21, 0x00, 0x83, 0xFE, 0xFF, 0xFF]
        for (i, b) in e1.enumerated() { s[446 + i] = b }
        s.putLE32(2048, at: 446 + 8)
        s.putLE32(100_000, at: 446 + 12)
        s[462] = 0x12
        s[462 + 4] = 0x07
        s.putLE32(5_000_000, at: 462 + 8)
        s.putLE32(10, at: 462 + 12)
        s.putLE32(7, at: 478 + 12)
        s[510] = 0x55
        s[511] = 0xAA
        #expect(RawDiskLayout.dump(sector: s, diskSize: 64 << 20) == """
            disk size 67108864 bytes (131072 sectors)
            boot code sha256 18b84c0c55db915237c65d5a2c75fbf5ecdb1cadb5ca62dbebaa4fac8889e7e0
            disk signature 0xcafef00d
            boot signature 0x55aa
            partition 1: status 0x80 type 0x83 start LBA 2048 sectors 100000 (51200000 bytes) CHS 0/32/33-1023/254/63
            partition 2: status 0x12 type 0x07 start LBA 5000000 sectors 10 (5120 bytes) CHS 0/0/0-0/0/0
              warning: status byte is neither 0x00 nor 0x80
              warning: partition ends past the end of the disk
            partition 3: status 0x00 type 0x00 start LBA 0 sectors 7 (3584 bytes) CHS 0/0/0-0/0/0
            partition 4: empty

            """)
    }
}
