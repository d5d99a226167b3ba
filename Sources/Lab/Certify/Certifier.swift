import BlockCore
import Foundation

/// Runs a `CertifyPlan`: the recorded cells in the suite as it is, the derived ones in the
/// certification suite, every boot validator `boots` times.
public struct Certifier: Sendable {
    public var plan: CertifyPlan
    public var options: RunOptions
    public var jobs: Int
    public var boots: Int
    /// The runners, so an interrupt can stop what their cells started.
    public let running = RunningCells()

    public init(plan: CertifyPlan, options: RunOptions, jobs: Int, boots: Int) {
        self.plan = plan
        self.options = options
        self.jobs = jobs
        self.boots = max(1, boots)
    }

    /// The standard pipeline with each boot validator repeated, and without the golden validator
    /// for derived cells (no goldens are recorded for them).
    public static func pipeline(kind: CertifyPlan.Kind, boots: Int) -> @Sendable (Scenario, Target) -> Pipeline {
        { scenario, target in
            var p = Pipeline.standard(for: scenario, target: target)
            p.validators = p.validators.compactMap { v -> (any Validator)? in
                if kind == .derived && v is GoldenValidator { return nil }
                if let b = v as? BootValidator { return RepeatedBootValidator(b, boots: boots) }
                return v
            }
            return p
        }
    }

    public func run(progress: @escaping @Sendable (Int, Int, CellResult) -> Void) -> [(CertifyPlan.Kind, CellResult)] {
        var out: [(CertifyPlan.Kind, CellResult)] = []
        let total = plan.cells.count
        let offset = Locked(0)
        for kind in [CertifyPlan.Kind.recorded, .derived] {
            let cells = plan.cells.filter { $0.kind == kind }.map(\.cell)
            guard !cells.isEmpty, let suite = kind == .recorded ? plan.suite : plan.derivedSuite else { continue }
            var o = options
            o.workDirectory = options.workDirectory.appendingPathComponent(kind.rawValue)
            let base = offset.current
            let runner = LabRunner(suite: suite, options: o, jobs: jobs, pipeline: Self.pipeline(kind: kind, boots: boots),
                                   progress: { done, _, r in progress(base + done, total, r) })
            running.adopt(runner.running)
            let results = runner.run(cells)
            offset.withLock { $0 += cells.count }
            out += results.map { (kind, $0) }
        }
        return out
    }
}

extension RunningCells {
    /// Makes `stopAll` on this set also stop the cells of `other` (certify runs two runners).
    public func adopt(_ other: RunningCells) { children.withLock { $0.append(other) } }
}
