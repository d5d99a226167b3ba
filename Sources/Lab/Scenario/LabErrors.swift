import Processes

/// A scenario or target file that cannot be used, named by file, key path and reason so the
/// author can fix it without reading the loader.
public struct ScenarioError: Error, CustomStringConvertible, Equatable, Sendable {
    public var file: String
    public var key: String
    public var reason: String

    public init(file: String, key: String, reason: String) {
        self.file = file
        self.key = key
        self.reason = reason
    }

    public var description: String { "\(file): \(key.isEmpty ? "(top level)" : key): \(reason)" }
}

/// A failure of the lab machinery itself (a tool missing, a command failing), as opposed to a
/// validator finding a defect in what it checks. Each case names what failed and why.
public enum LabError: Error, CustomStringConvertible, Sendable {
    /// A program the lab ran failed, timed out or could not start (exit status, stderr tail).
    case process(ProcessError)
    /// A tool or child the lab drives misbehaved: what it was, and what went wrong.
    case tool(String, reason: String)
    /// Something this machine must provide is absent (a Debian package, a tool, root).
    case missing(String, need: String)
    /// A file or directory the lab reads or writes.
    case file(path: String, reason: String)
    /// Debian's kernel package for a flavour (fetched, unpacked and indexed by the lab).
    case kernel(String, reason: String)
    /// A `bootlab lab` argument: a scenario, target or shard that does not exist or parse.
    case argument(String, reason: String)
    /// A cell's own state: a step needs what an earlier one did not leave.
    case cell(String, reason: String)

    public var description: String {
        switch self {
        case .process(let e): return e.description
        case let .tool(what, reason): return "\(what): \(reason)"
        case let .missing(what, need): return "the lab needs \(what) (\(need))"
        case let .file(path, reason): return "\(path): \(reason)"
        case let .kernel(package, reason): return "kernel \(package): \(reason)"
        case let .argument(what, reason): return "\(what): \(reason)"
        case let .cell(what, reason): return "\(what): \(reason)"
        }
    }
}
