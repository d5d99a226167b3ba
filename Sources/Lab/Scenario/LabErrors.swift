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
/// validator finding a defect in what it checks.
public struct LabError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
