#if canImport(Glibc)
import Glibc
#endif

/// Explicit kill points for crash tests (never read from the environment): the hidden
/// `--inject-fault kill:POINT` option of `bootlab materialize` and `bootlab finalize`, and
/// `--materialize-fault kill:POINT` of `bootlab mount`. At the point the process sends itself
/// SIGKILL — the same as `kill -9` at that exact moment. POINT is one of:
///
/// - `fill-written:N` — the Nth fill batch's bytes are written to the replacement, neither synced
///   nor recorded (the chunks must be copied again after the restart);
/// - `fill-chunk:N` — at least N chunks are recorded as filled (they must not be copied again);
/// - `verify:N` — N chunks have been verified against their recorded digests;
/// - `switch` — every chunk is verified and that is recorded, the switch-over is not;
/// - `finalize-built` — the replacement holds its final bytes (overlay applied, pointer marked,
///   signature written), `vm.vhdx` is still the plugin;
/// - `finalize-linked` — the old plugin also has its new name, `vm.vhdx` is still the plugin;
/// - `finalize-renamed` — `vm.vhdx` is the native file, the overlay and journal are not yet renamed.
public struct MaterializeFaults: Sendable, Equatable, CustomStringConvertible {
    public enum Point: Sendable, Equatable {
        case fillWritten(Int), fillChunk(Int), verify(Int), switchOver, finalizeBuilt, finalizeLinked, finalizeRenamed
    }

    public var points: [Point]
    public init(_ points: [Point] = []) { self.points = points }
    public static let none = MaterializeFaults()

    public init(parsing text: String) throws {
        var points: [Point] = []
        for item in text.split(separator: ",").map(String.init) where !item.isEmpty {
            guard item.hasPrefix("kill:") else { throw MaterializeFaultError(text: item, reason: "expected kill:POINT") }
            let spec = item.dropFirst(5).split(separator: ":", maxSplits: 1).map(String.init)
            let n = spec.count == 2 ? Int(spec[1]) : nil
            switch (spec.first ?? "", n) {
            case ("fill-written", let n?) where n >= 1: points.append(.fillWritten(n))
            case ("fill-chunk", let n?) where n >= 1: points.append(.fillChunk(n))
            case ("verify", let n?) where n >= 1: points.append(.verify(n))
            case ("switch", nil): points.append(.switchOver)
            case ("finalize-built", nil): points.append(.finalizeBuilt)
            case ("finalize-linked", nil): points.append(.finalizeLinked)
            case ("finalize-renamed", nil): points.append(.finalizeRenamed)
            default:
                throw MaterializeFaultError(text: item, reason: "unknown point (fill-written:N, fill-chunk:N, verify:N, switch, finalize-built, finalize-linked, finalize-renamed)")
            }
        }
        self.points = points
    }

    public var description: String {
        points.map {
            switch $0 {
            case .fillWritten(let n): return "kill:fill-written:\(n)"
            case .fillChunk(let n): return "kill:fill-chunk:\(n)"
            case .verify(let n): return "kill:verify:\(n)"
            case .switchOver: return "kill:switch"
            case .finalizeBuilt: return "kill:finalize-built"
            case .finalizeLinked: return "kill:finalize-linked"
            case .finalizeRenamed: return "kill:finalize-renamed"
            }
        }.joined(separator: ",")
    }

    /// Kills the process when `reached` matches a point of the plan (a counted point matches
    /// once its count is reached).
    func check(_ reached: Point) {
        for p in points {
            let hit: Bool
            switch (p, reached) {
            case let (.fillWritten(n), .fillWritten(m)), let (.fillChunk(n), .fillChunk(m)), let (.verify(n), .verify(m)): hit = m >= n
            default: hit = p == reached
            }
            if hit { _ = kill(getpid(), SIGKILL) }
        }
    }
}

public struct MaterializeFaultError: Error, CustomStringConvertible {
    public var text: String
    public var reason: String
    public var description: String { "--inject-fault '\(text)': \(reason)" }
}
