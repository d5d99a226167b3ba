import BlockCore
import Foundation

/// The mutation sample on the certified target (issue 15 part A's catalog, `MutationRun`): a
/// deterministic sample of deliberate faults injected into the target's cells that passed. A
/// fault the validators miss on this target (a survivor) fails the certificate: the suite cannot
/// vouch for a target on which it does not notice broken bytes. Cells that failed are left out
/// (their controls would fail too: no catch could count there).
public enum CertifyMutation {
    /// The mutation runs in progress, so an interrupt can stop what their mutants started.
    private static let active = Locked<[MutationRun]>([])

    /// Interrupt: stops QEMU, mounts and servers of the running mutants.
    @discardableResult
    public static func stopAll() -> (cells: Int, processes: Int) {
        active.current.reduce((0, 0)) { acc, run in let s = run.stopAll(); return (acc.0 + s.cells, acc.1 + s.processes) }
    }

    public struct Options: Sendable {
        /// Mutants in the sample; 0: not run (the certificate says so under "not covered").
        public var count: Int
        public var seed: UInt64 = 0
        /// False: leave out mutants only a boot can catch (faster).
        public var boots: Bool = true
        public var jobs: Int = 1
        public var bootTimeout: Double = BootRunner.defaultTimeout
        public var workDirectory: URL
        public init(count: Int, workDirectory: URL) {
            self.count = count
            self.workDirectory = workDirectory
        }
    }

    public static func sample(plan: CertifyPlan, results: [(CertifyPlan.Kind, CellResult)], options: Options,
                              progress: @escaping @Sendable (String) -> Void = { _ in }) -> Certificate.Mutation {
        guard options.count > 0 else {
            return .init(ran: false, caught: 0, total: 0, survivors: [], note: "not run (--mutants 0)")
        }
        var caught = 0, total = 0
        var failures: [String] = []
        var lines: [String] = []
        for kind in [CertifyPlan.Kind.recorded, .derived] {
            let passing = results.filter { $0.0 == kind && ($0.1.verdict == .pass || $0.1.verdict == .drift) }.map(\.1.cell)
            guard !passing.isEmpty, let suite = kind == .recorded ? plan.suite : plan.derivedSuite else { continue }
            var o = MutationOptions(workDirectory: options.workDirectory.appendingPathComponent(kind.rawValue))
            o.sample = options.count
            o.seed = options.seed
            o.boots = options.boots
            o.jobs = options.jobs
            o.bootTimeout = options.bootTimeout
            let run = MutationRun(suite: suite, options: o) { done, all, r in
                progress("mutant \(done)/\(all) \(r.mutant.id) on \(r.mutant.cell.id): \(r.status.rawValue)\(r.caughtBy.map { " by \($0)" } ?? "")")
            }
            active.withLock { $0.append(run) }
            let report = run.run(cells: passing)
            active.withLock { $0.removeAll { $0 === run } }
            caught += report.caught
            total += report.total
            failures += report.failures.map { "\($0.mutant.id) on \($0.mutant.cell.id) [\($0.status.rawValue)]: \($0.message)" }
            lines += report.results.map { "\($0.mutant.id) (\($0.mutant.fault)) on \($0.mutant.cell.id): \($0.status.rawValue)\($0.caughtBy.map { " by \($0)" } ?? "")" }
        }
        if total == 0 {
            let none = results.allSatisfy { $0.1.verdict != .pass && $0.1.verdict != .drift }
            return .init(ran: false, caught: 0, total: 0, survivors: [],
                         note: none ? "not run: no cell passed, so no fault could be told apart from the target's own failure"
                                    : "not run: the catalog has no mutant for these cells")
        }
        let note = "sample of \(options.count) per kind of cell (seed \(options.seed)\(options.boots ? "" : ", boot-only mutants left out")): " + lines.joined(separator: "; ")
        return .init(ran: true, caught: caught, total: total, survivors: failures, note: note)
    }
}
