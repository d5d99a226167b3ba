import BackupImage
import BlockCore
import DiskFormats
import Exposure
import Foundation

/// How a mutation run goes.
public struct MutationOptions: Sendable {
    /// Run N mutants chosen deterministically by `seed` (nil: the whole catalog).
    public var sample: Int?
    public var seed: UInt64 = 0
    /// False: mutants only a boot can catch are left out, and the others run without the boot
    /// validator (a cheaper validator must catch them) — the CI sample.
    public var boots: Bool = true
    /// Also run each mutated cell without its fault, with the validators that caught its mutants:
    /// a catch counts only if the same validator (or step) passes on the unmutated cell.
    public var control: Bool = true
    /// True: stop each mutant at its first catch (cheapest first). False: run every validator
    /// (without boots, unless `boots`) and report every one that fails (`failedValidators`).
    public var stopAtFirstCatch: Bool = true
    /// Mutants run in parallel.
    public var jobs: Int = 1
    public var bootTimeout: Double = BootRunner.defaultTimeout
    /// Per-mutant work directories go under here.
    public var workDirectory: URL
    public init(workDirectory: URL) { self.workDirectory = workDirectory }
}

/// One mutant's outcome.
public struct MutantResult: Sendable, Codable, Equatable {
    public enum Status: String, Sendable, Codable {
        /// A validator (or a step refusing the fault) failed, and passes without the fault.
        case caught
        /// Every validator passed: the suite missed the fault.
        case survived
        /// The fault could not be applied (the preflight says why): neither a catch nor a survivor.
        case error
        /// The catching validator fails on the unmutated cell too: not a catch.
        case invalid
    }
    public var mutant: Mutant
    public var status: Status
    /// The first validator (in cost order) that failed, e.g. `qemu-img-compare`, or `step:mount`.
    public var caughtBy: String?
    public var message: String
    /// Each validator or step that ran, and its verdict (validators after the catch are not run).
    public var ran: [String: Verdict]
    /// Every validator that failed, in cost order (only the first, `caughtBy`, unless the run
    /// had `stopAtFirstCatch` off).
    public var failedValidators: [String] = []
    public var seconds: Double
    /// Whether the catcher is one of `mutant.expected`.
    public var expectedCatcher: Bool { caughtBy.map { mutant.expected.contains($0) } ?? false }
}

/// A cell run without any fault, with the validators that caught its mutants.
public struct ControlResult: Sendable, Codable, Equatable {
    public var cell: Cell
    public var validators: [String: Verdict]
    public var seconds: Double
}

/// What `bootlab lab mutate` reports (also `report.json` of `--report DIR`).
public struct MutationReport: Sendable, Codable, Equatable {
    public var results: [MutantResult]
    public var controls: [ControlResult]
    /// Catalog entries no cell of the run could carry.
    public var uncovered: [String]
    /// Catalog size for these cells, before sampling and `boots: false`.
    public var catalogSize: Int
    public var sample: Int?
    public var seed: UInt64
    public var boots: Bool
    public var seconds: Double

    public var caught: Int { results.filter { $0.status == .caught }.count }
    public var total: Int { results.count }
    /// caught / total (1 when nothing ran).
    public var score: Double { total == 0 ? 1 : Double(caught) / Double(total) }
    public var survivors: [MutantResult] { results.filter { $0.status == .survived } }
    /// Survivors, errors and invalid catches: any of them fails the run.
    public var failures: [MutantResult] { results.filter { $0.status != .caught } }
    public var passed: Bool { failures.isEmpty && total > 0 }

    public var scoreLine: String {
        String(format: "mutation score: %d/%d caught (%.1f%%)", caught, total, score * 100)
            + (failures.isEmpty ? "" : "; not caught: " + failures.map { "\($0.mutant.id) [\($0.status.rawValue)]" }.joined(separator: ", "))
    }

    /// A Markdown table, one row per mutant (docs/mutation-testing.md is made from a full run's).
    public var markdownTable: String {
        var t = "| Mutant | Fault | Cell | Caught by | Expected | Result |\n|---|---|---|---|---|---|\n"
        for r in results {
            let by = r.failedValidators.count > 1 ? r.failedValidators.joined(separator: ", ") : (r.caughtBy ?? "—")
            t += "| \(r.mutant.id) | `\(r.mutant.fault)` | \(r.mutant.cell.id) | \(by) | \(r.mutant.expected.joined(separator: ", ")) | \(r.status.rawValue)\(r.status == .caught && !r.expectedCatcher ? " (unexpected catcher)" : "") |\n"
        }
        return t
    }

    public func write(to dir: URL) throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        try e.encode(self).write(to: dir.appendingPathComponent("mutation.json"))
        try Data((scoreLine + "\n\n" + markdownTable).utf8).write(to: dir.appendingPathComponent("mutation.md"))
    }
}

/// Runs the mutation catalog on a set of cells: each mutant is its cell's standard pipeline
/// with the fault injected (`RunOptions.faults`), the golden validator left out (a golden
/// records what a run produced; the catch must come from an independent expectation), and the
/// validators in order of cost, stopping at the first one that fails (the boot is last: a mutant
/// a cheap validator catches never boots).
///
///     let report = MutationRun(suite: suite, options: MutationOptions(workDirectory: dir)).run(cells: cells)
///     report.score; report.passed; report.results
public final class MutationRun: Sendable {
    public let suite: LabSuite
    public let options: MutationOptions
    /// Called after each mutant (from a worker thread, one call at a time).
    public let progress: @Sendable (_ done: Int, _ total: Int, _ result: MutantResult) -> Void
    private let runners = Locked<[ObjectIdentifier: RunningCells]>([:])

    public init(suite: LabSuite, options: MutationOptions,
                progress: @escaping @Sendable (Int, Int, MutantResult) -> Void = { _, _, _ in }) {
        self.suite = suite
        self.options = options
        self.progress = progress
    }

    /// The mutants a run on `cells` would run (after sampling and `boots`), and the catalog size.
    public func plan(cells: [Cell]) -> (mutants: [Mutant], catalogSize: Int, uncovered: [String]) {
        let (all, uncovered) = MutationCatalog.mutants(suite: suite, cells: cells)
        let pool = options.boots ? all : all.filter { !$0.needsBoot }
        let chosen = options.sample.map { MutationCatalog.sample(pool, count: $0, seed: options.seed) } ?? pool
        return (chosen, all.count, uncovered)
    }

    public func run(cells: [Cell]) -> MutationReport {
        let (mutants, size, uncovered) = plan(cells: cells)
        return run(mutants: mutants, catalogSize: size, uncovered: uncovered)
    }

    /// Runs the given mutants (a plan's, or hand-made ones: tests, a target's own faults).
    public func run(mutants: [Mutant], catalogSize: Int? = nil, uncovered: [String] = []) -> MutationReport {
        let start = Date()
        let size = catalogSize ?? mutants.count
        let reporting = Locked(0)
        let results = parallel(mutants.count) { i, done in
            let r = self.runMutant(mutants[i])
            // One progress call at a time: the callback need not be thread-safe.
            reporting.withLock { _ in self.progress(done(), mutants.count, r) }
            return r
        }
        var final = results
        var controls: [ControlResult] = []
        if options.control {
            // One control per mutated cell, with every validator that caught a mutant there.
            var byCell: [Cell: Set<String>] = [:]
            for r in results where r.status == .caught { if let v = r.caughtBy { byCell[r.mutant.cell, default: []].insert(v) } }
            let checks = byCell.keys.sorted().map { ($0, byCell[$0]!) }
            controls = parallel(checks.count) { i, _ in self.runControl(checks[i].0, validators: checks[i].1) }
            for c in controls {
                for (i, r) in final.enumerated() where r.mutant.cell == c.cell && r.status == .caught {
                    if let v = r.caughtBy, let verdict = c.validators[v], verdict != .pass {
                        final[i].status = .invalid
                        final[i].message = "\(v) also fails without the fault (\(verdict.rawValue) on the control run): \(r.message)"
                    }
                }
            }
        }
        return MutationReport(results: final, controls: controls, uncovered: uncovered, catalogSize: size, sample: options.sample,
                              seed: options.seed, boots: options.boots, seconds: Date().timeIntervalSince(start))
    }

    /// Interrupt: stops what the running mutants started (QEMU, mounts, servers).
    public func stopAll() -> (cells: Int, processes: Int) {
        var cells = 0, processes = 0
        for r in runners.current.values { let s = r.stopAll(); cells += s.cells; processes += s.processes }
        return (cells, processes)
    }

    // MARK: One mutant

    /// Validators in order of cost (cheapest first); unknown ones before the boot.
    static func costRank(_ name: String) -> Int {
        switch name {
        case "deferred-open": return 0
        case "bootlab-check": return 1
        case "qemu-img-check": return 2
        case "qemu-img-compare": return 3
        case "incremental-files": return 4
        case "independent-reader": return 5
        case "write-overlay": return 6
        case "backup-immutable": return 7
        default: return name == "boot" || name.hasPrefix("boot:") ? 9 : 8
        }
    }

    /// The boot, and what reads the console it leaves (the network adapter check).
    static func isBoot(_ v: any Validator) -> Bool { v.name == "boot" || v.name.hasPrefix("boot:") || v is NICValidator }

    func runOptions(faults: String?, label: String) -> RunOptions {
        var o = RunOptions(goldenDirectory: suite.directory.deletingLastPathComponent().appendingPathComponent("Golden"),
                           bootTimeout: options.bootTimeout,
                           workDirectory: options.workDirectory.appendingPathComponent(label))
        o.faults = faults
        return o
    }

    func runMutant(_ m: Mutant) -> MutantResult {
        let first = runMutantOnce(m, attempt: 1)
        // A step that fails (mount, reconfigure) may fail for the environment's sake (a busy
        // executable, an appliance that did not start): such a catch must repeat to count.
        guard first.status == .caught, first.caughtBy?.hasPrefix("step:") == true else { return first }
        var second = runMutantOnce(m, attempt: 2)
        if second.caughtBy != first.caughtBy {
            second.status = .error
            second.message = "not repeatable: first caught by \(first.caughtBy ?? "-") (\(first.message.prefix(200))), then \(second.caughtBy.map { "by " + $0 } ?? second.status.rawValue): \(second.message.prefix(200))"
        }
        second.seconds += first.seconds
        return second
    }

    func runMutantOnce(_ m: Mutant, attempt: Int) -> MutantResult {
        let latch = CatchLatch()
        let boots = options.boots, stop = options.stopAtFirstCatch
        let label = Self.label(m.id) + (attempt > 1 ? "-\(attempt)" : "")
        let runner = LabRunner(suite: suite, options: runOptions(faults: m.fault, label: label), jobs: 1, pipeline: { s, t in
            var p = Pipeline.standard(for: s, target: t)
            if let i = p.steps.firstIndex(where: { $0.name == "expose" }) { p.steps.insert(MutantPreflightStep(mutant: m), at: i + 1) }
            p.validators.removeAll { $0.name == GoldenValidator.recordName || (!boots && Self.isBoot($0)) }
            p.validators = p.validators.enumerated().sorted { (Self.costRank($0.element.name), $0.offset) < (Self.costRank($1.element.name), $1.offset) }
                .map { stop ? FirstCatch(inner: $0.element, latch: latch) : $0.element }
            return p
        })
        let key = ObjectIdentifier(runner.running)
        runners.withLock { $0[key] = runner.running }
        defer { runners.withLock { _ = $0.removeValue(forKey: key) } }
        let r = runner.runCell(m.cell)
        try? FileManager.default.removeItem(at: options.workDirectory.appendingPathComponent(label))
        var ran: [String: Verdict] = [:]
        for rec in r.records where !(rec.outcome.verdict == .skip && rec.outcome.message.hasPrefix(FirstCatch.notRun)) { ran[rec.name] = rec.outcome.verdict }
        if let pre = r.records.first(where: { $0.name == MutantPreflightStep.stepName }), pre.outcome.verdict == .fail {
            return MutantResult(mutant: m, status: .error, caughtBy: nil, message: "fault not applicable: \(pre.outcome.message)", ran: ran, seconds: r.seconds)
        }
        if let step = r.records.first(where: { $0.kind == .step && $0.outcome.verdict == .fail }) {
            return MutantResult(mutant: m, status: .caught, caughtBy: "step:\(step.name)", message: step.outcome.message, ran: ran, seconds: r.seconds)
        }
        let failed = r.records.filter { $0.kind == .validator && $0.outcome.verdict == .fail }
        if let v = failed.first {
            return MutantResult(mutant: m, status: .caught, caughtBy: v.name, message: v.outcome.message, ran: ran,
                                failedValidators: failed.map(\.name), seconds: r.seconds)
        }
        return MutantResult(mutant: m, status: .survived, caughtBy: nil,
                            message: "every validator passed: " + r.records.filter { $0.kind == .validator }.map { "\($0.name)=\($0.outcome.verdict.rawValue)" }.joined(separator: " "),
                            ran: ran, seconds: r.seconds)
    }

    func runControl(_ cell: Cell, validators: Set<String>) -> ControlResult {
        let runner = LabRunner(suite: suite, options: runOptions(faults: nil, label: "control-" + Self.label(cell.id)), jobs: 1, pipeline: { s, t in
            var p = Pipeline.standard(for: s, target: t)
            // Deferred open stays first whatever else runs: nothing may have read payload before it.
            p.validators = p.validators.filter { $0.name == "deferred-open" || validators.contains($0.name) }
            return p
        })
        let key = ObjectIdentifier(runner.running)
        runners.withLock { $0[key] = runner.running }
        defer { runners.withLock { _ = $0.removeValue(forKey: key) } }
        let r = runner.runCell(cell)
        try? FileManager.default.removeItem(at: options.workDirectory.appendingPathComponent("control-" + Self.label(cell.id)))
        var v: [String: Verdict] = [:]
        for rec in r.records where rec.kind == .validator { v[rec.name] = rec.outcome.verdict }
        // A step that refused a mutant must succeed without it (else the environment failed, not the product).
        for rec in r.records where rec.kind == .step && validators.contains("step:" + rec.name) { v["step:" + rec.name] = rec.outcome.verdict }
        // A failed step leaves the validators skipped: that is not a pass.
        for name in validators where v[name] == nil { v[name] = .fail }
        return ControlResult(cell: cell, validators: v, seconds: r.seconds)
    }

    static func label(_ id: String) -> String {
        String(id.map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "_" })
    }

    /// Runs `count` jobs on `options.jobs` threads; results in index order.
    private func parallel<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int, () -> Int) -> T) -> [T] {
        let queue = Locked<[Int]>(Array((0..<count).reversed()))
        let results = Locked<[Int: T]>([:])
        let finished = Locked(0)
        let group = DispatchGroup()
        for _ in 0..<min(max(1, options.jobs), max(count, 1)) {
            group.enter()
            let thread = Thread {
                while let i = queue.withLock({ $0.popLast() }) {
                    let r = body(i) { finished.withLock { $0 += 1; return $0 } }
                    results.withLock { $0[i] = r }
                }
                group.leave()
            }
            thread.stackSize = 4 << 20
            thread.start()
        }
        group.wait()
        let all = results.current
        return (0..<count).compactMap { all[$0] }
    }
}

/// Shared by one mutant's validators: the first that failed.
final class CatchLatch: Sendable {
    let first = Locked<String?>(nil)
}

/// A validator that does not run once an earlier one (cheaper) caught the mutant.
struct FirstCatch: Validator {
    static let notRun = "not run: the mutant was already caught by "
    let inner: any Validator
    let latch: CatchLatch
    var name: String { inner.name }

    func validate(in context: CellContext) throws -> StepOutcome {
        if let by = latch.first.current { return .skip(Self.notRun + by) }
        let outcome: StepOutcome
        do { outcome = try inner.validate(in: context) } catch { outcome = .fail("error: \(error)") }
        if outcome.verdict == .fail { latch.first.withLock { if $0 == nil { $0 = inner.name } } }
        return outcome
    }
}

/// Runs after `expose`, before anything serves the plugin: proves the mutant's fault applies to
/// this cell, so a fault that cannot apply is reported as an error, never counted as a catch
/// (e.g. a structure name the format does not have, which would only make the mount fail). It
/// also holds the catalog to the drivers: every structure the exposed file's driver names must
/// be in `MutationCatalog.structures`.
struct MutantPreflightStep: LabStep {
    static let stepName = "mutant-preflight"
    let mutant: Mutant
    var name: String { Self.stepName }

    func run(in context: CellContext) throws -> StepOutcome {
        let plan = try FaultPlan(parsing: mutant.fault)
        var notes: [String] = []
        for site in plan.sites {
            switch site {
            case .structureByte(let s):
                for (machine, plugin) in context.plugins.sorted(by: { $0.key < $1.key }) {
                    let format = context.target.nativeFormat
                    guard let driver = DiskFormatRegistry.driver(named: format) else { return .fail("no driver for \(format)") }
                    let sites = try driver.structureSites(path: plugin)
                    guard sites[s] != nil else { return .fail("\(machine): \(format) has no structure '\(s)' here (it has: \(sites.keys.sorted().joined(separator: ", ")))") }
                    let missing = Set(sites.keys).subtracting(MutationCatalog.structures(format: format, options: context.target.formatOptions))
                    guard missing.isEmpty else { return .fail("the catalog lacks \(format) structures \(missing.sorted()): add them to MutationCatalog.structures") }
                    notes.append("\(machine): \(s) at file offset \(sites[s]!)")
                }
            case .staleBlock:
                for (machine, backup) in context.backups.sorted(by: { $0.key < $1.key }) {
                    let pass: PassphraseSource? = context.scenario.backup.encryption != .none ? .file(try BackupStep.passphraseFile(in: context)) : nil
                    let vault = context.scenario.backup.vault.map { ExposeStep.pluginDirectory(context).appendingPathComponent("vault-\($0)").path }
                    let reader = try BackupImageReader.open(path: backup, passphrase: pass, vault: vault)
                    guard let b = reader.firstBlockShadowingParent() else { return .fail("\(machine): the backup's newest image replaces no block of an older one") }
                    notes.append("\(machine): block \(b) served stale")
                }
            default:
                notes.append(site == plan.sites.first ? "fault \(mutant.fault)" : "")
            }
        }
        return .pass(notes.filter { !$0.isEmpty }.joined(separator: "; "))
    }
}
