/// Why `bootlab fuzz` cannot start or continue (the fuzzed program's failures are verdicts, not errors).
public enum FuzzError: Error, CustomStringConvertible, Sendable, Equatable {
    /// `--format NAME` names no format the fuzzer knows.
    case unknownFormat(String, known: [String])
    /// The format is known to the fuzzer but its DiskFormats driver is not in this build.
    case driverMissing(String)
    /// Seeds could not be made or read.
    case seed(String)
    /// A file or directory of the campaign could not be written or read.
    case file(String, reason: String)
    /// The command line is unusable (no `@@` and no stdin, empty oracle…).
    case usage(String)
    /// The fuzzed command could not be started at all (not a verdict: nothing ran).
    case cannotRun(String)

    public var description: String {
        switch self {
        case let .unknownFormat(f, known): return "unknown format '\(f)' (known: \(known.joined(separator: ", ")))"
        case let .driverMissing(f): return "format '\(f)': its DiskFormats driver is not in this build (DiskFormatRegistry has no '\(f)'), so no seeds can be rendered; give seeds with --seeds DIR --generated-seeds 0, or build with the driver"
        case let .seed(r): return "seeds: \(r)"
        case let .file(p, r): return "\(p): \(r)"
        case let .usage(r): return r
        case let .cannotRun(r): return "cannot run the command: \(r)"
        }
    }
}
