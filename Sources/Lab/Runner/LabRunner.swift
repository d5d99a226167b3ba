import BlockCore
import Foundation
import Processes

/// Runs cells through their pipelines on `jobs` worker threads, reporting progress as each cell
/// finishes. Results come back in cell order whatever the completion order.
public struct LabRunner: Sendable {
    public var suite: LabSuite
    public var options: RunOptions
    public var jobs: Int
    public var pipeline: @Sendable (Scenario, Target) -> Pipeline
    /// Called after each cell (from a worker thread).
    public var progress: @Sendable (_ done: Int, _ total: Int, _ result: CellResult) -> Void
    /// Cells running now, so an interrupt can stop what they started (`stopRunningCells`).
    public let running = RunningCells()
    public init(suite: LabSuite, options: RunOptions, jobs: Int = 2,
                pipeline: @escaping @Sendable (Scenario, Target) -> Pipeline = Pipeline.standard,
                progress: @escaping @Sendable (Int, Int, CellResult) -> Void = { _, _, _ in }) {
        self.suite = suite
        self.options = options
        self.jobs = max(1, jobs)
        self.pipeline = pipeline
        self.progress = progress
    }

    public func run(_ cells: [Cell]) -> [CellResult] {
        let queue = Locked<[Int]>(Array(cells.indices).reversed())
        let results = Locked<[Int: CellResult]>([:])
        let group = DispatchGroup()
        for _ in 0..<min(jobs, max(cells.count, 1)) {
            group.enter()
            let thread = Thread {
                while let index = queue.withLock({ $0.popLast() }) {
                    let result = runCell(cells[index])
                    let done = results.withLock { r -> Int in r[index] = result; return r.count }
                    progress(done, cells.count, result)
                }
                group.leave()
            }
            thread.stackSize = 4 << 20
            thread.start()
        }
        group.wait()
        let all = results.current
        return cells.indices.compactMap { all[$0] }
    }

    public func runCell(_ cell: Cell) -> CellResult {
        let start = Date()
        guard let scenario = suite.scenarios.first(where: { $0.name == cell.scenario }),
              let target = suite.targets[cell.target] else {
            let o = StepOutcome.fail("unknown scenario or target")
            return CellResult(cell: cell, expectation: "?", records: [StepRecord(name: "setup", kind: .step, outcome: o, seconds: 0)], seconds: 0)
        }
        let context = CellContext(scenario: scenario, target: target, suite: suite, options: options)
        running.add(context)
        defer { running.remove(context) }
        try? FileManager.default.createDirectory(at: context.directory, withIntermediateDirectories: true)
        let p = pipeline(scenario, target)
        var records: [StepRecord] = []
        var blocked: String?
        for step in p.steps {
            if let blocked {
                records.append(StepRecord(name: step.name, kind: .step, outcome: .skip("skipped: \(blocked) failed"), seconds: 0))
                continue
            }
            let (outcome, seconds) = timed { try step.run(in: context) }
            records.append(StepRecord(name: step.name, kind: .step, outcome: outcome, seconds: seconds))
            if outcome.verdict == .fail { blocked = step.name }
        }
        for validator in p.validators {
            if let blocked {
                records.append(StepRecord(name: validator.name, kind: .validator, outcome: .skip("skipped: \(blocked) failed"), seconds: 0))
                continue
            }
            let (outcome, seconds) = timed { try validator.validate(in: context) }
            records.append(StepRecord(name: validator.name, kind: .validator, outcome: outcome, seconds: seconds))
        }
        if let pending = context.pendingGolden, let i = records.firstIndex(where: { $0.name == GoldenValidator.recordName }) {
            records[i].outcome = GoldenValidator.commit(pending, otherRecords: records.filter { $0.name != GoldenValidator.recordName })
        }
        context.runCleanups()
        return CellResult(cell: cell, expectation: scenario.expectation(for: target.name).summary,
                          records: records, seconds: Date().timeIntervalSince(start))
    }

    private func timed(_ body: () throws -> StepOutcome) -> (StepOutcome, Double) {
        let start = Date()
        let outcome: StepOutcome
        do { outcome = try body() } catch { outcome = .fail("error: \(error)") }
        return (outcome, Date().timeIntervalSince(start))
    }
}

/// The contexts of the cells running now.
public final class RunningCells: Sendable {
    private let contexts = Locked<[ObjectIdentifier: CellContext]>([:])
    public init() {}
    func add(_ c: CellContext) { contexts.withLock { $0[ObjectIdentifier(c)] = c } }
    func remove(_ c: CellContext) { _ = contexts.withLock { $0.removeValue(forKey: ObjectIdentifier(c)) } }

    /// Interrupt: runs every running cell's cleanups (unmount FUSE, stop servers), then stops
    /// every child process still alive (QEMU, mounters, tools), SIGTERM then SIGKILL. Returns the
    /// number of cells and processes stopped.
    @discardableResult
    public func stopAll(grace: Double = 5) -> (cells: Int, processes: Int) {
        let all = contexts.withLock { Array($0.values) }
        for c in all { c.runCleanups() }
        let processes = LiveChildren.shared.running.count
        LiveChildren.shared.terminateAll(grace: grace)
        return (all.count, processes)
    }
}
