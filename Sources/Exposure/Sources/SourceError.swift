/// Why an external backup source (an nbdkit plugin, an NBD export, an image read through our
/// format readers or qemu-nbd) cannot be used. Every case names the source and what went wrong;
/// nothing is served from a source that produced one of these.
public enum SourceError: Error, CustomStringConvertible, Equatable, Sendable {
    /// `--source SPEC` (or a pointer's `source`) cannot be understood.
    case badSpec(spec: String, reason: String)
    /// The source would run a program or read a file the opener did not allow (the tree rule, the
    /// `--allow-source-plugin` allow-list).
    case notAllowed(source: String, reason: String)
    /// The source's server (nbdkit, qemu-nbd) exited before it served.
    case startFailed(command: [String], status: String, stderr: String)
    /// The source's server did not start serving in time.
    case startTimeout(command: [String], seconds: Double, stderr: String)
    /// The NBD connection or handshake failed.
    case connect(source: String, reason: String)
    /// A read did not complete in time (a hanging plugin).
    case readTimeout(source: String, offset: UInt64, length: Int, seconds: Double)
    /// A read failed.
    case read(source: String, offset: UInt64, length: Int, reason: String)
    /// The source is not the one recorded at expose time.
    case changed(source: String, reason: String)

    public var description: String {
        switch self {
        case let .badSpec(spec, reason): return "source '\(spec)': \(reason)"
        case let .notAllowed(source, reason): return "source \(source) refused: \(reason)"
        case let .startFailed(command, status, stderr):
            return "source command \(Self.show(command)) \(status) before serving" + Self.said(stderr)
        case let .startTimeout(command, seconds, stderr):
            return "source command \(Self.show(command)) did not start serving within \(Self.seconds(seconds)) (stopped it; raise --source-timeout if it is only slow)" + Self.said(stderr)
        case let .connect(source, reason): return "source \(source): cannot connect: \(reason)"
        case let .readTimeout(source, offset, length, seconds):
            return "source \(source): read of \(length) bytes at offset \(offset) did not complete within \(Self.seconds(seconds)) (the source hangs; raise --source-timeout if it is only slow)"
        case let .read(source, offset, length, reason): return "source \(source): read of \(length) bytes at offset \(offset) failed: \(reason)"
        case let .changed(source, reason):
            return "source \(source) changed since it was exposed: \(reason); nothing is served (expose it again if the change is intended)"
        }
    }

    static func show(_ argv: [String]) -> String { "[" + argv.map { "\"\($0)\"" }.joined(separator: ", ") + "]" }
    static func seconds(_ s: Double) -> String { s == s.rounded() ? "\(Int(s)) s" : "\(s) s" }
    static func said(_ stderr: String) -> String {
        let t = stderr.split(separator: "\n").suffix(4).joined(separator: " | ")
        return t.isEmpty ? "" : "; it said: \(t)"
    }
}
