import Exposure
import Foundation
import Testing
@testable import Lab

/// The lab catches breakage: one deliberately broken thing per run, through the real pipeline
/// (generate → back up → expose → FUSE mount → validators → boot), and the validator that must
/// notice it does. Faults are injected by `FaultPlan` (`--inject-fault`), never by editing code.
@Suite(.serialized)
struct FaultInjectionTests {
    /// Runs one cell against `golden` (the repository's goldens by default).
    func run(_ scenario: Scenario, _ target: String, faults: String?, label: String,
             golden: URL? = nil, update: Bool = false, withoutBoot: Bool = false) throws -> CellResult {
        let suite = try ScenarioParsingTests.suite()
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-fault-\(label)-\(getpid())")
        try? FileManager.default.removeItem(at: work)
        defer { try? FileManager.default.removeItem(at: work) }
        var options = RunOptions(goldenDirectory: golden ?? ScenarioParsingTests.repo.appendingPathComponent("Golden"),
                                 updateGolden: update, bootTimeout: 90, workDirectory: work)
        options.faults = faults
        var patched = suite
        patched.scenarios = suite.scenarios.map { $0.name == scenario.name ? scenario : $0 }
        let pipeline: @Sendable (Scenario, Target) -> Pipeline = { s, t in
            var p = Pipeline.standard(for: s, target: t)
            if withoutBoot { p.validators.removeAll { $0.name == "boot" || $0.name.hasPrefix("boot:") } }
            return p
        }
        return LabRunner(suite: patched, options: options, pipeline: pipeline).runCell(Cell(scenario: scenario.name, target: target))
    }

    /// Goldens recorded on this machine by a clean run of the cell, then every recorded package
    /// version rewritten as if another machine (other Debian builds) had recorded them: a fault
    /// must still be a regression, never excused as drift.
    func goldensFromAnotherMachine(_ scenario: Scenario, _ target: String, label: String) throws -> URL {
        let golden = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-fault-golden-\(label)-\(getpid())")
        try? FileManager.default.removeItem(at: golden)
        let clean = try run(scenario, target, faults: nil, label: label + "-record", golden: golden, update: true)
        #expect(clean.verdict == .pass, "\(summary(clean))")
        let cell = golden.appendingPathComponent(scenario.name).appendingPathComponent(target)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        func other(_ packages: [String: String]) -> [String: String] { packages.mapValues { $0 + "+other1" } }
        let inputsURL = cell.appendingPathComponent("inputs.json")
        var inputs = try JSONDecoder().decode(GoldenInputs.self, from: Data(contentsOf: inputsURL))
        for name in inputs.machines.keys { inputs.machines[name]!.generator.external.packages = other(inputs.machines[name]!.generator.external.packages) }
        inputs.pipeline.external.packages = other(inputs.pipeline.external.packages)
        #expect(inputs.machines.values.allSatisfy { $0.generator.external.packages["e2fsprogs"]?.hasSuffix("+other1") == true })
        try encoder.encode(inputs).write(to: inputsURL)
        let versionsURL = cell.appendingPathComponent("versions.json")
        var versions = try JSONDecoder().decode(ToolVersions.self, from: Data(contentsOf: versionsURL))
        versions.packages = other(versions.packages)
        try encoder.encode(versions).write(to: versionsURL)
        return golden
    }

    func verdict(_ r: CellResult, _ name: String) -> Verdict? { r.records.first { $0.name == name }?.outcome.verdict }
    func message(_ r: CellResult, _ name: String) -> String { r.records.first { $0.name == name }?.outcome.message ?? "(no record)" }
    func summary(_ r: CellResult) -> String { r.records.map { "\($0.name)=\($0.outcome.verdict.rawValue): \($0.outcome.message.prefix(160))" }.joined(separator: "\n") }

    @Test func faultPlanParsing() throws {
        #expect(try FaultPlan(parsing: "vhdx-byte:0x10,mbr-byte:454").sites == [.vhdxByte(16), .mbrByte(454)])
        #expect(try FaultPlan(parsing: "vhdx-byte:payload+17").sites == [.vhdxPayloadByte(17)])
        #expect(try FaultPlan(parsing: "file-byte:0x10,structure-byte:L2 entry").sites == [.vhdxByte(16), .structureByte("L2 entry")])
        #expect(throws: FaultPlanError.self) { try FaultPlan(parsing: "structure-byte:") }
        #expect(throws: FaultPlanError.self) { try FaultPlan(parsing: "mbr-byte:512") }
        #expect(throws: FaultPlanError.self) { try FaultPlan(parsing: "disk-byte:1") }
        #expect(throws: FaultPlanError.self) { try FaultPlan(parsing: "vhdx-byte") }
        var sector = [UInt8](repeating: 0, count: 512)
        try FaultPlan(parsing: "mbr-byte:3").corruptMBR(&sector)
        #expect(sector[3] == 0xFF && sector.filter { $0 != 0 }.count == 1)
    }

    /// One byte of the served VHDX (first payload block: the virtual disk's MBR boot code) is
    /// wrong: the golden digest of the exposed file and the content compare must both fail.
    @Test func flippedVHDXByteFailsGoldenAndCompare() throws {
        let scenario = try ScenarioParsingTests.suite().scenario(named: "mbrless-ext4")
        let golden = try goldensFromAnotherMachine(scenario, "kvm-virtio", label: "vhdx")
        defer { try? FileManager.default.removeItem(at: golden) }
        let r = try run(scenario, "kvm-virtio", faults: "vhdx-byte:payload+17", label: "vhdx", golden: golden)
        #expect(r.verdict == .fail, "\(summary(r))")
        #expect(verdict(r, "golden") == .fail, "\(summary(r))")
        #expect(message(r, "golden").hasPrefix("regression: "), "\(message(r, "golden"))")
        #expect(verdict(r, "qemu-img-compare") == .fail, "\(summary(r))")
        // qemu-img compare reports the first differing sector: byte 17 lies in sector 0.
        #expect(message(r, "qemu-img-compare").contains("Content mismatch at offset 0!"), "\(message(r, "qemu-img-compare"))")
        // Other readers see the same wrong bytes: libvhdi's content digest differs too.
        #expect(verdict(r, "independent-reader") == .fail, "\(summary(r))")
        // The backup was never touched.
        #expect(verdict(r, "backup-immutable") == .pass, "\(summary(r))")
    }

    /// One byte of the synthesized MBR (partition 1's start LBA) is wrong: the composed disk no
    /// longer equals the source disk, and the guest cannot find its root.
    @Test func flippedMBRByteFailsCompareAndBoot() throws {
        let scenario = try ScenarioParsingTests.suite().scenario(named: "mbrless-ext4")
        let golden = try goldensFromAnotherMachine(scenario, "kvm-virtio", label: "mbr")
        defer { try? FileManager.default.removeItem(at: golden) }
        let r = try run(scenario, "kvm-virtio", faults: "mbr-byte:454", label: "mbr", golden: golden)
        #expect(r.verdict == .fail, "\(summary(r))")
        #expect(verdict(r, "qemu-img-compare") == .fail, "\(summary(r))")
        #expect(message(r, "qemu-img-compare").contains("Content mismatch at offset 0!"), "\(message(r, "qemu-img-compare"))")
        #expect(verdict(r, "boot") == .fail, "\(summary(r))")
        #expect(verdict(r, "golden") == .fail, "\(summary(r))")
        #expect(message(r, "golden").hasPrefix("regression: "), "\(message(r, "golden"))")
        // The VHDX container itself is sound: only its contents are wrong.
        #expect(verdict(r, "qemu-img-check") == .pass, "\(summary(r))")
        #expect(verdict(r, "bootlab-check") == .pass, "\(summary(r))")
    }

    /// The guest's initramfs lacks the target's storage driver (virtio_blk): exposure is exact,
    /// but the boot must fail — and the boot validator must say so.
    @Test func removedDriverFailsBoot() throws {
        var scenario = try ScenarioParsingTests.suite().scenario(named: "mbrless-ext4")
        scenario.machines[0].storageDrivers = ["ata_piix"]
        let r = try run(scenario, "kvm-virtio", faults: nil, label: "driver")
        #expect(verdict(r, "boot") == .fail, "\(summary(r))")
        #expect(message(r, "boot").lowercased().contains("root device not found"), "\(message(r, "boot"))")
        // Everything about the exposed disk itself is still right.
        #expect(verdict(r, "qemu-img-compare") == .pass, "\(summary(r))")
        #expect(verdict(r, "deferred-open") == .pass, "\(summary(r))")
    }

    /// One byte inside one structure of a target's native format, named by the format's driver
    /// (`structure-byte:NAME`), is wrong in the served file: the validators that read that
    /// structure must notice (our check, QEMU's check or compare, the golden digest), and the
    /// backup is untouched.
    func flippedStructure(_ scenarioName: String, _ target: String, _ structure: String, mustFail: [String]) throws {
        let scenario = try ScenarioParsingTests.suite().scenario(named: scenarioName)
        let label = structure.replacingOccurrences(of: " ", with: "-")
        // The structure validators decide; a boot of a disk with broken metadata would only wait
        // for its timeout, so these cells run without the boot.
        let r = try run(scenario, target, faults: "structure-byte:\(structure)", label: label, withoutBoot: true)
        #expect(r.verdict == .fail, "\(summary(r))")
        for v in mustFail { #expect(verdict(r, v) == .fail, "\(target) \(structure): \(v) should fail\n\(summary(r))") }
        #expect(verdict(r, "backup-immutable") == .pass, "\(summary(r))")
    }

    /// VMDK (vmware-pvscsi): a grain-table entry no longer matches its redundant copy.
    @Test func flippedVMDKGrainTableEntryIsCaught() throws {
        try flippedStructure("mbrless-ext4", "vmware-pvscsi", "grain table entry", mustFail: ["bootlab-check", "qemu-img-check", "golden"])
    }

    /// qcow2 (kvm-virtio): an L2 entry points at another cluster (refcounts no longer add up).
    @Test func flippedQCOW2L2EntryIsCaught() throws {
        try flippedStructure("mbrless-ext4", "kvm-virtio", "L2 entry", mustFail: ["bootlab-check", "qemu-img-check", "golden"])
    }

    /// Fixed VHD (azure-gen1): the footer's checksum no longer matches its bytes.
    @Test func flippedVHDFooterIsCaught() throws {
        try flippedStructure("mbrless-ext4", "azure-gen1", "footer", mustFail: ["bootlab-check", "golden"])
    }

    /// VDI (virtualbox-ahci): a block-map entry points past the blocks (QEMU's check says so too).
    @Test func flippedVDIBlockMapEntryIsCaught() throws {
        try flippedStructure("foreign-drivers-unreconfigured", "virtualbox-ahci", "block map entry", mustFail: ["bootlab-check", "qemu-img-check"])
    }
}
