import Exposure
import Foundation
import Testing
@testable import Lab

/// `bootlab lab mutate`'s catalog and runner (docs/mutation-testing.md): the catalog covers what
/// it must, sampling is deterministic, and the runner tells a caught mutant from a survivor
/// through the real pipeline (no boot: the validators that catch these are cheaper).
@Suite(.serialized)
struct MutationTests {
    @Test func faultPlanParsesTheMutationSites() throws {
        let text = "volume-byte:0x1C,skip-boot-patch,partition-shift:1,disk-grow:1048576,omit-driver:ata_piix,stale-block,drop-write:payload"
        let plan = try FaultPlan(parsing: text)
        #expect(plan.sites == [.volumeByte(28), .skipBootPatch, .partitionShift(1), .diskGrow(1 << 20), .omitDriver("ata_piix"), .staleBlock, .dropPayloadWrite])
        #expect(try FaultPlan(parsing: plan.description) == plan)
        #expect(plan.omittedDrivers == ["ata_piix"] && plan.servesStaleBlock && plan.dropsPayloadWrite && plan.skipsBootPatch)
        #expect(plan.partitionShift == 1 && plan.diskGrowth == 1 << 20 && plan.volumeBytes == [28])
        // None of them corrupts served bytes: they act on steps.
        #expect(!plan.corruptsVHDXBytes)
        #expect(throws: FaultPlanError.self) { try FaultPlan(parsing: "disk-grow:1000") }       // not a multiple of 512
        #expect(throws: FaultPlanError.self) { try FaultPlan(parsing: "partition-shift:0") }
        #expect(throws: FaultPlanError.self) { try FaultPlan(parsing: "omit-driver:") }
        #expect(throws: FaultPlanError.self) { try FaultPlan(parsing: "drop-write:metadata") }
    }

    @Test func catalogCoversEveryFamilyOnTheDefaultSuite() throws {
        let suite = try ScenarioParsingTests.suite()
        let (mutants, uncovered) = MutationCatalog.mutants(suite: suite, cells: Cell.all(suite.scenarios))
        #expect(uncovered.isEmpty, "catalog entries without a cell: \(uncovered)")
        let ids = Set(mutants.map(\.id))
        for id in ["composition/disk-grow-1MiB", "composition/hidden-sectors-skipped", "composition/partition-start-off-by-one",
                   "mbr/disk-signature", "mbr/boot-signature", "volume/bpb-reserved-sectors", "reconfiguration/driver-left-out",
                   "backup/stale-cache-block", "overlay/dropped-write-fuse", "overlay/dropped-write-nbd",
                   "reconfiguration/hypervisor-module-left-out"] {
            #expect(ids.contains(id), "\(id) missing")
        }
        // One structure mutant per structure of each target's native format.
        for t in suite.targets.values {
            for s in MutationCatalog.structures(format: t.nativeFormat, options: t.formatOptions) {
                #expect(ids.contains("\(t.nativeFormat)/\(s)"), "\(t.nativeFormat)/\(s) missing")
            }
        }
        for m in mutants {
            #expect(m.applicable.contains(m.cell))
            let s = try suite.scenario(named: m.cell.scenario)
            #expect(s.expectation(for: m.cell.target) == .boots, "\(m.id) runs on a must-not-boot cell")
            #expect(throws: Never.self) { try FaultPlan(parsing: m.fault) }
        }
        // The relocated-disk mutant runs where the composer relocates.
        let grow = try #require(mutants.first { $0.id == "composition/disk-grow-1MiB" })
        #expect(grow.cell.scenario == "relocated-volume")
        // The Hyper-V gen2 module mutant leaves hv_storvsc out where only the validator can see it.
        let hv = try #require(mutants.first { $0.id == "reconfiguration/hypervisor-module-left-out" })
        #expect(hv.fault == "omit-driver:hv_storvsc" && hv.cell.target == "hyperv-gen2" && !hv.needsBoot)
        #expect(hv.expected == ["hypervisor-modules"])
        // Never on an extended-tier cell (debian-grub, debian-uefi) while a default-tier cell fits:
        // e.g. debian-uefi's Debian initramfs has hv_storvsc already, so omitting it there proves nothing.
        for m in mutants where m.applicable.contains(where: { c in !((try? suite.scenario(named: c.scenario))?.isExtended ?? true) }) {
            #expect(!(try suite.scenario(named: m.cell.scenario)).isExtended, "\(m.id) on \(m.cell)")
        }
        // Restricting the cells restricts the catalog: no reconfigured cell, no driver mutant.
        let plain = Cell.all(suite.scenarios.filter { !$0.reconfigure })
        #expect(!MutationCatalog.mutants(suite: suite, cells: plain).mutants.contains { $0.family == "reconfiguration" })
    }

    @Test func samplingIsDeterministic() throws {
        let suite = try ScenarioParsingTests.suite()
        let all = MutationCatalog.mutants(suite: suite, cells: Cell.all(suite.scenarios)).mutants
        let a = MutationCatalog.sample(all, count: 6, seed: 15), b = MutationCatalog.sample(all, count: 6, seed: 15)
        #expect(a.count == 6 && a == b)
        #expect(a.map(\.id) == a.map(\.id).sorted())
        #expect(MutationCatalog.sample(all, count: 6, seed: 16) != a)
        #expect(MutationCatalog.sample(all, count: all.count + 3, seed: 1) == all)
    }

    /// Through the real pipeline: the relocated disk composed 1 MiB too large is caught by the
    /// content compare against the independent expectation (the golden is not consulted), a fault
    /// that changes nothing survives and fails the run, and a fault that cannot apply is an error.
    @Test func runnerTellsCaughtFromSurvivedFromError() throws {
        let suite = try ScenarioParsingTests.suite()
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-mutation-test-\(getpid())")
        defer { try? FileManager.default.removeItem(at: work) }
        var o = MutationOptions(workDirectory: work)
        o.boots = false
        o.jobs = 2
        let cell = Cell(scenario: "relocated-volume", target: "hyperv-gen1")
        func mutant(_ id: String, _ fault: String) -> Mutant {
            Mutant(id: id, family: "test", summary: id, fault: fault, cell: cell, applicable: [cell], expected: ["qemu-img-compare"], needsBoot: false)
        }
        let report = MutationRun(suite: suite, options: o).run(mutants: [
            mutant("grow", "disk-grow:1048576"),
            // A byte past the end of the served file: nothing changes, so nothing may fail.
            mutant("nothing", "file-byte:0x7fffffffffff"),
            // relocated-volume's backup is no chain: the fault cannot apply.
            mutant("no-chain", "stale-block"),
        ])
        let by = Dictionary(uniqueKeysWithValues: report.results.map { ($0.mutant.id, $0) })
        #expect(by["grow"]?.status == .caught && by["grow"]?.caughtBy == "qemu-img-compare", "\(String(describing: by["grow"]))")
        #expect(by["grow"]?.message.contains("virtual size") == true, "\(by["grow"]?.message ?? "")")
        #expect(by["grow"]?.ran["golden"] == nil)
        #expect(by["nothing"]?.status == .survived, "\(String(describing: by["nothing"]))")
        #expect(by["no-chain"]?.status == .error, "\(String(describing: by["no-chain"]))")
        #expect(report.caught == 1 && report.total == 3 && !report.passed)
        #expect(report.scoreLine.hasPrefix("mutation score: 1/3 caught"))
        // The control ran the catching validator on the unmutated cell, and it passed.
        #expect(report.controls.first { $0.cell == cell }?.validators["qemu-img-compare"] == .pass)
    }
}
