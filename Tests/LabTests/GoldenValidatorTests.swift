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
        #expect(try v.validate(in: f.context(update: true)).verdict == .pass)
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
        _ = try v.validate(in: f.context(update: true))
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
        _ = try v.validate(in: f.context(update: true))
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
        _ = try v.validate(in: f.context(update: true))
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
        _ = try v.validate(in: f.context(update: true))
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
        _ = try v.validate(in: f.context(update: true))
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
}
