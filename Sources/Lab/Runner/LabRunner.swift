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
        let expectation = scenario.expectation(for: target.name).summary
        guard let limit = options.cellTimeout else {
            let records = Locked<[StepRecord]>([])
            runPipeline(p, context: context, into: records, stopped: Locked(nil))
            return CellResult(cell: cell, expectation: expectation, records: records.current, seconds: Date().timeIntervalSince(start))
        }
        // The hard timeout: the pipeline runs on its own thread, with every child it starts
        // tagged with the cell's id; past the limit this thread stops those children (QEMU,
        // front-ends, tools), runs the cell's cleanups (unmount, stop servers), and the pipeline
        // skips whatever it had not started.
        let records = Locked<[StepRecord]>([])
        let stopped = Locked<String?>(nil)
        let done = DispatchSemaphore(value: 0)
        let owner = "lab-cell:\(cell.id):\(ObjectIdentifier(context).hashValue)"
        let thread = Thread { [self] in
            ProcessOwner.$current.withValue(owner) {
                runPipeline(p, context: context, into: records, stopped: stopped)
            }
            done.signal()
        }
        thread.stackSize = 4 << 20
        thread.start()
        if done.wait(timeout: .now() + limit) == .success {
            return CellResult(cell: cell, expectation: expectation, records: records.current, seconds: Date().timeIntervalSince(start))
        }
        let running = records.current.count
        let reason = "timeout after \(Self.seconds(limit))"
        stopped.withLock { $0 = reason }
        let killed = LiveChildren.shared.terminateAll(owner: owner, grace: 5)
        context.runCleanups()
        // The step that was running returns once its children are gone; give it a moment so its
        // own record (what it saw when stopped) is in the report, but never wait for ever.
        let finished = done.wait(timeout: .now() + 30) == .success
        var all = records.current
        let during = p.steps.map(\.name) + p.validators.map(\.name)
        let inFlight = running < during.count ? during[running] : "cleanup"
        let message = "\(reason): stopped during \(inFlight); \(killed) process\(killed == 1 ? "" : "es") killed"
            + (finished ? "" : "; the step did not return within 30 s and was abandoned")
        all.append(StepRecord(name: Self.timeoutRecord, kind: .step, outcome: .fail(message), seconds: Date().timeIntervalSince(start)))
        return CellResult(cell: cell, expectation: expectation, records: all, seconds: Date().timeIntervalSince(start))
    }

    /// The record a cell stopped by `cellTimeout` ends with.
    public static let timeoutRecord = "cell-timeout"

    static func seconds(_ s: Double) -> String {
        s == s.rounded() ? "\(Int(s)) s" : String(format: "%.1f s", s)
    }

    /// Steps, then validators, then the golden commit and the cleanups; each record appended to
    /// `records` as soon as it exists. Once `stopped` holds a reason (the cell timed out) nothing
    /// new starts: the rest is recorded as skipped.
    private func runPipeline(_ p: Pipeline, context: CellContext, into records: Locked<[StepRecord]>, stopped: Locked<String?>) {
        var blocked: String?
        func skipReason() -> String? {
            if let s = stopped.current { return "skipped: cell stopped (\(s))" }
            return blocked.map { "skipped: \($0) failed" }
        }
        for step in p.steps {
            if let why = skipReason() {
                records.withLock { $0.append(StepRecord(name: step.name, kind: .step, outcome: .skip(why), seconds: 0)) }
                continue
            }
            let (outcome, seconds) = timed { try step.run(in: context) }
            records.withLock { $0.append(StepRecord(name: step.name, kind: .step, outcome: outcome, seconds: seconds)) }
            if outcome.verdict == .fail { blocked = step.name }
        }
        for validator in p.validators {
            if let why = skipReason() {
                records.withLock { $0.append(StepRecord(name: validator.name, kind: .validator, outcome: .skip(why), seconds: 0)) }
                continue
            }
            let (outcome, seconds) = timed { try validator.validate(in: context) }
            records.withLock { $0.append(StepRecord(name: validator.name, kind: .validator, outcome: outcome, seconds: seconds)) }
        }
        if stopped.current == nil, let pending = context.pendingGolden {
            records.withLock { all in
                if let i = all.firstIndex(where: { $0.name == GoldenValidator.recordName }) {
                    all[i].outcome = GoldenValidator.commit(pending, otherRecords: all.filter { $0.name != GoldenValidator.recordName })
                }
            }
        }
        context.runCleanups()
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
    /// Other sets stopped together with this one (`Certifier` runs one runner per suite).
    let children = Locked<[RunningCells]>([])
    public init() {}
    func add(_ c: CellContext) { contexts.withLock { $0[ObjectIdentifier(c)] = c } }
    func remove(_ c: CellContext) { _ = contexts.withLock { $0.removeValue(forKey: ObjectIdentifier(c)) } }

    /// Interrupt: runs every running cell's cleanups (unmount FUSE, stop servers), then stops
    /// every child process still alive (QEMU, mounters, tools), SIGTERM then SIGKILL. Returns the
    /// number of cells and processes stopped.
    @discardableResult
    public func stopAll(grace: Double = 5) -> (cells: Int, processes: Int) {
        let all = contexts.withLock { Array($0.values) } + children.current.flatMap { $0.contexts.current.values }
        for c in all { c.runCleanups() }
        let processes = LiveChildren.shared.running.count
        LiveChildren.shared.terminateAll(grace: grace)
        return (all.count, processes)
    }
}
