import BlockCore
import Foundation
import Processes
import Testing
@testable import Lab

/// `bootlab certify`'s plan (which scenarios apply to a target and why not), its certificate,
/// target files' `boot_runner:`, `lab merge`, and the per-cell hard timeout. The real certify runs
/// (real boots, the custom runner, the megasas example) are in ci/test.d/57-certify.sh.
struct CertifyTests {
    static let repo = ScenarioParsingTests.repo

    static func target(_ path: String) throws -> Target {
        let url = repo.appendingPathComponent(path)
        return try ScenarioLoader.parseTarget(yaml: String(contentsOf: url, encoding: .utf8), file: path)
            .resolvingRunner(relativeTo: url.deletingLastPathComponent().path)
    }

    static func scratch(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-certify-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: url)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    @Test func aSuiteTargetIsCertifiedOnItsRecordedCells() throws {
        let suite = try ScenarioParsingTests.suite()
        let dir = try Self.scratch("plan-h1")
        defer { try? FileManager.default.removeItem(at: dir) }
        let plan = try CertifyPlan.make(target: try Self.target("Scenarios/targets/hyperv-gen1.yaml"), suite: suite, derivedDirectory: dir)
        let recorded = plan.cells.filter { $0.kind == .recorded }.map(\.cell)
        #expect(recorded == Cell.all(suite.scenarios.filter { !$0.isExtended }, targets: ["hyperv-gen1"]))
        #expect(!recorded.isEmpty)
        // The scenarios that do not list hyperv-gen1 run as derived cells when they can say
        // something about it, and are listed with a reason otherwise: nothing disappears.
        let named = Set(plan.cells.map(\.cell.scenario)).union(plan.notApplicable.map(\.what))
        #expect(named == Set(suite.scenarios.map(\.name)))
        #expect(plan.derivedSuite?.targets.keys.sorted() ?? ["hyperv-gen1"] == ["hyperv-gen1"])
        // A UEFI machine on a SeaBIOS target could only wait out its boot timeout: not applicable,
        // with the firmware named (the full certify once spent 3 × 240 s on such a derived cell).
        let uefi = suite.scenarios.filter { s in !s.isExtended && s.machines.contains(where: \.isUEFI) }.map(\.name)
        #expect(!uefi.isEmpty)
        let reasons = Dictionary(uniqueKeysWithValues: plan.notApplicable.map { ($0.what, $0.reason) })
        // A 4Kn machine is refused first for its sectors (the words `lab run` uses), every other
        // UEFI machine for the firmware.
        for name in uefi {
            let fourKn = try suite.scenario(named: name).machines.contains { $0.sectorSize != 512 }
            let why = fourKn ? "4096-byte sectors" : "the target's firmware is seabios"
            #expect(reasons[name]?.contains(why) == true, "\(name): \(reasons[name] ?? "applicable")")
        }
        #expect(uefi.contains { name in (try? suite.scenario(named: name).machines.allSatisfy { $0.sectorSize == 512 }) == true })
    }

    @Test func aBrokenProfileIsDerivedAndCarriesOnlyItsOwnModules() throws {
        let suite = try ScenarioParsingTests.suite()
        let dir = try Self.scratch("plan-broken")
        defer { try? FileManager.default.removeItem(at: dir) }
        let broken = try Self.target("examples/targets/hyperv-gen1-wrong-driver.yaml")
        let plan = try CertifyPlan.make(target: broken, suite: suite, only: ["mbrless-ext4", "foreign-drivers-unreconfigured"], derivedDirectory: dir)
        #expect(plan.cells.map(\.cell.id) == ["foreign-drivers-unreconfigured/hyperv-gen1-wrong-driver", "mbrless-ext4/hyperv-gen1-wrong-driver"])
        #expect(plan.cells.allSatisfy { $0.kind == .derived })
        let derived = try #require(plan.derivedSuite)
        #expect(Array(derived.targets.keys) == ["hyperv-gen1-wrong-driver"])
        // The guest's initramfs is built from the certified profile alone: no other target with
        // the same driver name may slip ata_piix in.
        let s = try derived.scenario(named: "mbrless-ext4")
        #expect(s.expectation(for: broken.name) == .boots)
        let modules = derived.initramfsModules(for: s.machines[0], in: s)
        #expect(modules == broken.modules)
        #expect(!modules.contains("ata_piix"))
        #expect(plan.notApplicable.contains { $0.what == "whole-disk" && $0.reason.contains("not selected") })
    }

    @Test func theMegasasExampleAppliesWhereItCanAndSaysWhyElsewhere() throws {
        let suite = try ScenarioParsingTests.suite()
        let dir = try Self.scratch("plan-megasas")
        defer { try? FileManager.default.removeItem(at: dir) }
        let plan = try CertifyPlan.make(target: try Self.target("examples/targets/qemu-pc-megasas.yaml"), suite: suite, derivedDirectory: dir)
        // Cloud-kernel scenarios cannot boot a megaraid_sas disk; the AHCI-only machine that is
        // not reconfigured says nothing about the target; the reconfigured ones apply.
        let reasons = Dictionary(uniqueKeysWithValues: plan.notApplicable.map { ($0.what, $0.reason) })
        #expect(reasons["mbrless-ext4"]?.contains("requires the generic kernel") == true)
        #expect(reasons["foreign-drivers-unreconfigured"]?.contains("does not reconfigure") == true)
        let reconfiguredGeneric = suite.scenarios.filter { s in !s.isExtended && s.reconfigure && s.machines.allSatisfy { $0.kernel == .generic } }
        #expect(Set(plan.cells.map(\.cell.scenario)) == Set(reconfiguredGeneric.map(\.name)))
        #expect(Set(plan.cells.map(\.cell.scenario)).isSuperset(of: ["foreign-drivers", "encrypted-reconfigured", "vault-chain-encrypted-reconfigured"]))
        // The reconfiguration engine learns the target through a drivers.json copy.
        #expect(plan.adaptations.contains { $0.contains("'lsi-sas'") })
        let data = try Data(contentsOf: dir.appendingPathComponent("drivers.json"))
        let top = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let entry = try #require((top["targets"] as? [String: Any])?["qemu-pc-megasas"] as? [String: Any])
        #expect(entry["controller"] as? String == "lsi-sas")
    }

    @Test func aCustomRunnerKeepsTheGoldensAndSkipsNBDScenarios() throws {
        let suite = try ScenarioParsingTests.suite()
        let dir = try Self.scratch("plan-runner")
        defer { try? FileManager.default.removeItem(at: dir) }
        let t = try Self.target("examples/targets/script-runner/hyperv-gen1.yaml")
        let runner = try #require(t.bootRunner)
        #expect(runner.command[0] == Self.repo.appendingPathComponent("examples/runners/qemu-ide-runner.sh").path)
        #expect(runner.console == .file && runner.timeout == 120)
        #expect(t.profile == suite.targets["hyperv-gen1"]!.profile)
        let plan = try CertifyPlan.make(target: t, suite: suite, derivedDirectory: dir)
        let fuse = suite.scenarios.filter { $0.backup.frontend == .fuse && !$0.isExtended }
        #expect(plan.cells.filter { $0.kind == .recorded }.map(\.cell) == Cell.all(fuse, targets: ["hyperv-gen1"]))
        #expect(plan.suite.targets["hyperv-gen1"]?.bootRunner == runner)
        // NBD-served scenarios, recorded or not, cannot reach a runner that boots files.
        #expect(plan.notApplicable.filter { $0.reason.contains("custom boot runner boots files") }.map(\.what).sorted()
                == suite.scenarios.filter { $0.backup.frontend == .nbd && !$0.isExtended }.map(\.name).sorted())
    }

    @Test(arguments: [
        ("command: [run.sh, \"{format}\"]\n  console: stdout", "no argument contains {disk}"),
        ("command: [run.sh, \"{disk}\", \"{disks}\"]\n  console: stdout", "unknown placeholder {disks}"),
        ("command: [run.sh, \"{disk}\"]\n  console: file", "no argument contains {console}"),
        ("command: [run.sh, \"{disk}\"]\n  console: serial", "console"),
        ("command: [run.sh, \"{disk}\"]\n  console: stdout\n  timeout: -1", "positive number"),
        ("command: [run.sh, \"{disk}\"]\n  console: stdout\n  extra: 1", "extra"),
    ])
    func badBootRunnersAreRejectedWithTheReason(_ yaml: String, _ reason: String) throws {
        let base = try String(contentsOf: Self.repo.appendingPathComponent("Scenarios/targets/hyperv-gen1.yaml"), encoding: .utf8)
        let text = base + "boot_runner:\n  " + yaml + "\n"
        do {
            _ = try ScenarioLoader.parseTarget(yaml: text, file: "hyperv-gen1.yaml")
            Issue.record("accepted a bad boot_runner: \(yaml)")
        } catch let e as ScenarioError {
            #expect(e.key.hasPrefix("boot_runner"), "\(e)")
            #expect(e.description.contains(reason), "\(e)")
        }
    }

    // MARK: certificate

    static func record(_ name: String, _ verdict: Verdict, _ message: String, details: String? = nil, attachments: [String: String] = [:]) -> StepRecord {
        StepRecord(name: name, kind: .validator, outcome: StepOutcome(verdict, message, details: details, attachments: attachments), seconds: 1)
    }

    @Test func aFailingCertificateSaysWhyAndStandsAlone() throws {
        let suite = try ScenarioParsingTests.suite()
        let dir = try Self.scratch("cert-render")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = Self.repo.appendingPathComponent("examples/targets/hyperv-gen1-wrong-driver.yaml")
        let broken = try Self.target("examples/targets/hyperv-gen1-wrong-driver.yaml")
        let plan = try CertifyPlan.make(target: broken, suite: suite, only: ["mbrless-ext4", "mbrless-fat32"], derivedDirectory: dir.appendingPathComponent("suite"))
        let console = dir.appendingPathComponent("console-main.log")
        try Data("\u{1B}[2JSeaBIOS\nBOOTLAB: module ahci absent from this kernel\nBOOTLAB: root device not found (UUID=1234)\n".utf8).write(to: console)
        let bad = CellResult(cell: Cell(scenario: "mbrless-ext4", target: broken.name), expectation: "boots", records: [
            Self.record("qemu-img-check", .pass, "no errors"),
            Self.record("boot", .fail, "did not boot: BOOTLAB: root device not found (UUID=1234)",
                        details: "boot verdicts: fail fail", attachments: ["console": console.path]),
        ], seconds: 3)
        let flaky = CellResult(cell: Cell(scenario: "mbrless-fat32", target: broken.name), expectation: "boots", records: [
            Self.record("independent-reader", .skip, "VDI has no independent reader"),
            Self.record("boot", .fail, "flaky: 1 of 2 boots passed", details: "boot verdicts: pass fail"),
        ], seconds: 3)
        let cert = try Certificate.make(plan: plan, targetFile: file, results: [(.derived, bad), (.derived, flaky)], boots: 2,
                                        mutation: CertifyMutation.sample(plan: plan, results: [], options: .init(count: 0, workDirectory: dir)), tool: "bootlab test", versions: ["qemu-utils": "1:7.2"])
        #expect(!cert.certified && cert.exitStatus == 1)
        #expect(cert.verdict.hasPrefix("NOT CERTIFIED: 2 of 2 cells failed"))
        #expect(cert.target.digest == (try Digest.file(file)))
        let f = try #require(cert.failures.first { $0.check == "boot" && $0.cell == "mbrless-ext4/hyperv-gen1-wrong-driver" })
        #expect(f.consoleExcerpt?.contains("BOOTLAB: module ahci absent") == true)
        #expect(cert.cells.first { $0.cell.scenario == "mbrless-fat32" }?.flaky == true)
        #expect(cert.cells.first { $0.cell.scenario == "mbrless-ext4" }?.flaky == false)
        #expect(cert.summary["flaky"] == 1)
        // What was not covered: the skipped validator, the goldens of derived cells, the mutation sample.
        #expect(cert.notCovered.contains { $0.what == "mbrless-fat32/hyperv-gen1-wrong-driver: independent-reader" })
        #expect(cert.notCovered.contains { $0.what == "mbrless-ext4/hyperv-gen1-wrong-driver: golden" })
        #expect(cert.notCovered.contains { $0.what == "mutation sample" && $0.reason == "not run (--mutants 0)" })
        let html = try cert.write(to: dir.appendingPathComponent("out"))
        let text = try String(contentsOf: html, encoding: .utf8)
        #expect(text.contains("NOT CERTIFIED"))
        #expect(text.contains("BOOTLAB: root device not found (UUID=1234)"))
        #expect(text.contains(cert.target.digest))
        #expect(!text.contains("\u{1B}"))
        for external in ["src=", "<link", "http://", "https://", "@import"] { #expect(!text.contains(external), "external asset: \(external)") }
        let junit = try String(contentsOf: dir.appendingPathComponent("out/junit.xml"), encoding: .utf8)
        #expect(junit.contains("<failure message=\"NOT CERTIFIED"))
        #expect(junit.contains("not-covered"))
        let json = try JSONDecoder().decode(Certificate.self, from: Data(contentsOf: dir.appendingPathComponent("out/certificate.json")))
        #expect(json.failures.count == cert.failures.count)
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("out/logs/mbrless-ext4.hyperv-gen1-wrong-driver.boot.console.log").path))
    }

    @Test func nothingTestedIsNotCertified() throws {
        let suite = try ScenarioParsingTests.suite()
        let dir = try Self.scratch("cert-empty")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = Self.repo.appendingPathComponent("Scenarios/targets/hyperv-gen1.yaml")
        let plan = try CertifyPlan.make(target: try Self.target("Scenarios/targets/hyperv-gen1.yaml"), suite: suite, only: ["mbrless-ext4"], derivedDirectory: dir)
        let cert = try Certificate.make(plan: plan, targetFile: file, results: [], boots: 1, mutation: CertifyMutation.sample(plan: plan, results: [], options: .init(count: 0, workDirectory: dir)), tool: "t", versions: [:])
        #expect(!cert.certified)
        #expect(cert.verdict.contains("nothing was tested"))
    }

    // MARK: repeated boots

    struct FixedValidator: Validator {
        let name = "boot"
        let verdicts: Locked<[Verdict]>
        var console: URL? = nil
        func validate(in context: CellContext) throws -> StepOutcome {
            let v = verdicts.withLock { $0.removeFirst() }
            guard let console else { return StepOutcome(v, v == .pass ? "marker seen" : "did not boot") }
            try Data("boot said \(v.rawValue)\n".utf8).write(to: console)
            return StepOutcome(v, v == .pass ? "marker seen" : "did not boot", attachments: ["console": console.path])
        }
    }

    @Test func aFlakyCellShowsTheFailingBootsConsole() throws {
        let ctx = try Self.context("repeat-console")
        let log = ctx.options.workDirectory.appendingPathComponent("console-main.log")
        let o = try RepeatedBootValidator(FixedValidator(verdicts: Locked([.pass, .fail, .pass]), console: log), boots: 3).validate(in: ctx)
        #expect(Set(o.attachments.keys) == ["console", "console (boot 1)", "console (boot 2)", "console (boot 3)"])
        #expect(try String(contentsOfFile: o.attachments["console"]!, encoding: .utf8) == "boot said fail\n")
        #expect(Certificate.consoleExcerpt(o.attachments) == "boot said fail")
        #expect(try String(contentsOfFile: o.attachments["console (boot 3)"]!, encoding: .utf8) == "boot said pass\n")
    }

    static func context(_ name: String) throws -> CellContext {
        let suite = try ScenarioParsingTests.suite()
        let s = try suite.scenario(named: "mbrless-ext4")
        return CellContext(scenario: s, target: suite.targets["hyperv-gen1"]!, suite: suite,
                           options: RunOptions(goldenDirectory: try scratch(name), workDirectory: try scratch(name)))
    }

    @Test func repeatedBootsMustAgree() throws {
        let ctx = try Self.context("repeat")
        let agree = try RepeatedBootValidator(FixedValidator(verdicts: Locked([.pass, .pass, .pass])), boots: 3).validate(in: ctx)
        #expect(agree.verdict == .pass && agree.message == "3/3 boots agree: marker seen")
        let failing = try RepeatedBootValidator(FixedValidator(verdicts: Locked([.fail, .fail, .fail])), boots: 3).validate(in: ctx)
        #expect(failing.verdict == .fail && failing.message.hasPrefix("3/3 boots agree: did not boot"))
        // A majority does not win: disagreeing boots are a flaky cell, which fails.
        let flaky = try RepeatedBootValidator(FixedValidator(verdicts: Locked([.pass, .fail, .pass])), boots: 3).validate(in: ctx)
        #expect(flaky.verdict == .fail)
        #expect(flaky.message.hasPrefix("flaky: 2 of 3 boots passed"))
        let rec = StepRecord(name: "boot", kind: .validator, outcome: flaky, seconds: 0)
        #expect(RepeatedBootValidator.verdicts(in: rec) == [.pass, .fail, .pass])
    }

    // MARK: per-cell hard timeout

    struct HangingStep: LabStep {
        let name = "hang"
        func run(in context: CellContext) throws -> StepOutcome {
            let r = try Shell.run("sleep", ["300"], check: false)
            return .fail("sleep ended with status \(r.status)")
        }
    }

    struct NeverValidator: Validator {
        let name = "after"
        func validate(in context: CellContext) throws -> StepOutcome { .pass("must not run") }
    }

    @Test func aCellPastItsHardTimeoutIsStoppedWithoutTouchingItsNeighbours() throws {
        let suite = try ScenarioParsingTests.suite()
        let work = try Self.scratch("timeout")
        defer { try? FileManager.default.removeItem(at: work) }
        var options = RunOptions(goldenDirectory: work, workDirectory: work)
        options.cellTimeout = 2
        let cleaned = Locked(false)
        // A child of the same process that is not the cell's: it must survive the cell's timeout.
        let neighbour = try Command(["sleep", "300"], stdout: .null, stderr: .null).spawn()
        defer { neighbour.terminate(grace: 1) }
        let runner = LabRunner(suite: suite, options: options, jobs: 1, pipeline: { _, _ in
            Pipeline(steps: [CleanupProbe(flag: cleaned), HangingStep(), CleanupProbe(flag: Locked(false))], validators: [NeverValidator()])
        })
        let start = Date()
        let result = runner.runCell(Cell(scenario: "mbrless-ext4", target: "hyperv-gen1"))
        let took = Date().timeIntervalSince(start)
        #expect(result.verdict == .fail)
        let last = try #require(result.records.last)
        #expect(last.name == LabRunner.timeoutRecord)
        #expect(last.outcome.message.hasPrefix("timeout after 2 s: stopped during hang; 1 process killed"), "\(last.outcome.message)")
        // The hung step saw its child killed; nothing after it ran.
        #expect(result.records.first { $0.name == "hang" }?.outcome.message.contains("sleep ended") == true)
        #expect(result.records.filter { $0.name == "probe" }.last?.outcome.verdict == .skip)
        #expect(result.records.first { $0.name == "after" }?.outcome.message.hasPrefix("skipped: cell stopped (timeout after 2 s)") == true)
        #expect(cleaned.current, "the cell's cleanups (unmount, stop servers) did not run")
        #expect(took < 30, "the timeout did not stop the cell: \(took) s")
        #expect(neighbour.isRunning, "a process that was not the cell's was stopped")
        #expect(!LiveChildren.shared.running.contains { $0.argv == ["sleep", "300"] && $0.pid != neighbour.pid })
    }

    struct CleanupProbe: LabStep {
        let name = "probe"
        let flag: Locked<Bool>
        func run(in context: CellContext) throws -> StepOutcome {
            context.addCleanup { [flag] in flag.withLock { $0 = true } }
            return .pass("cleanup registered")
        }
    }

    // MARK: lab merge

    static func shardReport(_ k: Int, of n: Int, cells all: [Cell], suite: LabSuite, in dir: URL, failing: String? = nil) throws {
        let shard = try Shard(index: k, count: n)
        let results = shard.select(all).map { c in
            CellResult(cell: c, expectation: "boots", records: [record("boot", c.id == failing ? .fail : .pass, c.id == failing ? "did not boot" : "marker seen")], seconds: 1)
        }
        var r = LabReport(cells: results, shard: shard, tool: "t")
        r.suite = try SuiteIdentity.make(cells: all, suite: suite)
        try r.write(to: dir)
    }

    @Test func mergeCombinesShardsAndRefusesBadSets() throws {
        let suite = try ScenarioParsingTests.suite()
        let dir = try Self.scratch("merge")
        defer { try? FileManager.default.removeItem(at: dir) }
        let all = Cell.all(suite.scenarios)
        for k in 1...3 { try Self.shardReport(k, of: 3, cells: all, suite: suite, in: dir.appendingPathComponent("s\(k)"), failing: all[4].id) }
        let dirs = (1...3).map { dir.appendingPathComponent("s\($0)") }
        let merged = try LabMerge.merge(directories: dirs.reversed(), tool: "t")
        #expect(merged.cells.map(\.cell) == all)
        #expect(merged.summary["fail"] == 1 && merged.summary["pass"] == all.count - 1)
        #expect(merged.shard == nil && merged.merged?.count == 3)
        try merged.write(to: dir.appendingPathComponent("out"))
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("out/report.html").path))

        func refusal(_ dirs: [URL]) -> String {
            do { _ = try LabMerge.merge(directories: dirs, tool: "t"); return "merged" } catch { return "\(error)" }
        }
        #expect(refusal([dirs[0], dirs[2]]).hasPrefix("missing shard 2/3 of a \(all.count)-cell suite"))
        #expect(refusal(dirs + [dirs[1]]).hasPrefix("shard 2/3 appears 2 times"))
        #expect(refusal(dirs + [dir.appendingPathComponent("nowhere")]).contains("nowhere: no report.json"))
        // A shard of another suite (one scenario fewer): its digest differs.
        let other = Array(all.filter { $0.scenario != "whole-disk" })
        try Self.shardReport(2, of: 3, cells: other, suite: suite, in: dir.appendingPathComponent("o2"))
        #expect(refusal([dirs[0], dir.appendingPathComponent("o2"), dirs[2]]).hasPrefix("shards disagree on the suite"))
        // Another N.
        try Self.shardReport(1, of: 2, cells: all, suite: suite, in: dir.appendingPathComponent("n2"))
        #expect(refusal([dirs[0], dirs[1], dirs[2], dir.appendingPathComponent("n2")]).hasPrefix("shards disagree on N"))
        // N from a hostile file: named, not walked.
        let huge = dir.appendingPathComponent("huge/report.json")
        try FileManager.default.createDirectory(at: huge.deletingLastPathComponent(), withIntermediateDirectories: true)
        var h = try JSONDecoder().decode(LabReport.self, from: Data(contentsOf: dirs[0].appendingPathComponent("report.json")))
        h.shard = "1/4000000000"
        try JSONEncoder().encode(h).write(to: huge)
        #expect(refusal([huge.deletingLastPathComponent()]).hasPrefix("missing shards 2/4000000000, 3/4000000000"))
        // A report that is not a shard.
        var whole = LabReport(cells: [], shard: nil, tool: "t")
        whole.suite = try SuiteIdentity.make(cells: all, suite: suite)
        try whole.write(to: dir.appendingPathComponent("whole"))
        #expect(refusal([dir.appendingPathComponent("whole")]).contains("not a shard report"))
        // A shard that lost a cell.
        let s1 = dir.appendingPathComponent("s1/report.json")
        var cut = try JSONDecoder().decode(LabReport.self, from: Data(contentsOf: s1))
        let lost = cut.cells.removeLast().cell.id
        try JSONEncoder().encode(cut).write(to: s1)
        #expect(refusal(dirs).contains("shard 1/3 does not hold its cells; missing: \(lost)"))
    }

    // MARK: lab run --repeat

    @Test func repeatedRunsFailTheCellsWhoseVerdictChanged() {
        func run(_ a: Verdict, _ b: Verdict) -> [CellResult] {
            [CellResult(cell: Cell(scenario: "s", target: "a"), expectation: "boots", records: [Self.record("boot", a, "x")], seconds: 1),
             CellResult(cell: Cell(scenario: "s", target: "b"), expectation: "boots", records: [Self.record("boot", b, "x")], seconds: 1)]
        }
        let (same, sameLine) = LabReport.compareRuns([run(.pass, .fail), run(.pass, .fail), run(.pass, .fail)])
        #expect(sameLine == "bootlab lab: repeat: 3 runs, identical verdicts for all 2 cells")
        #expect(same.map(\.verdict) == [.pass, .fail])
        #expect(same[0].records.last?.outcome.message == "same verdict in 3 runs: pass")
        let (flaky, line) = LabReport.compareRuns([run(.pass, .fail), run(.fail, .fail), run(.pass, .fail)])
        #expect(line == "bootlab lab: repeat: 3 runs, 1 of 2 cells changed verdict: s/a (pass, fail, pass)")
        // The last run passed s/a, but the cell is flaky: it fails.
        #expect(flaky[0].verdict == .fail)
        #expect(flaky[0].records.last?.outcome.message == "flaky: verdicts differ across 3 runs: pass, fail, pass")
    }
}
