import CProcessShim
#if canImport(Glibc)
import Glibc
#endif

/// The one way BootLab starts another program. An argv array (never a shell string), found on
/// PATH unless it contains a "/"; the inherited environment plus additions; an optional working
/// directory; stdin from bytes, /dev/null or ours; stdout and stderr captured, sent to a file, to
/// /dev/null or left as ours.
///
/// Built over `posix_spawn` and a pidfd rather than Foundation's `Process`: `Process` learns of
/// an exit through a descriptor the child inherits, so a tool that daemonizes (vhdimount) keeps
/// it open and `Process` waits for the daemon instead of the tool. A pidfd is readable exactly
/// when *this* child exits, and poll(2) waits for it together with the output pipes — no sleeping
/// loops. Linux-only (pidfd: kernel 5.3), like the rest of BootLab.
public struct Command: Sendable {
    /// Where the child's stdin comes from.
    public enum Input: Sendable {
        case null
        case bytes([UInt8])
        /// Our own stdin (an interactive tool).
        case inherit
    }

    /// Where one of the child's output streams goes.
    public enum Output: Sendable {
        /// Kept in memory and returned by `run` (not available to `spawn`: nobody would read it).
        case capture
        case null
        case inherit
        /// A file, created if missing; truncated unless `append`.
        case file(String, append: Bool)
        /// stderr only: the same destination as stdout (one descriptor, so lines interleave in
        /// order instead of two writers overwriting each other from offset 0).
        case stdout
    }

    public var argv: [String]
    /// Variables added to (or replacing those of) the inherited environment.
    public var environment: [String: String]
    /// False: the child sees `environment` only (tests that control every variable).
    public var inheritsEnvironment: Bool
    /// Names removed from the inherited environment.
    public var removedEnvironment: [String]
    public var workingDirectory: String?
    public var input: Input
    public var stdout: Output
    public var stderr: Output

    public init(_ argv: [String], environment: [String: String] = [:], inheritsEnvironment: Bool = true,
                removedEnvironment: [String] = [], workingDirectory: String? = nil, input: Input = .null,
                stdout: Output = .capture, stderr: Output = .capture) {
        precondition(!argv.isEmpty, "a command needs at least the program's name")
        self.argv = argv
        self.environment = environment
        self.inheritsEnvironment = inheritsEnvironment
        self.removedEnvironment = removedEnvironment
        self.workingDirectory = workingDirectory
        self.input = input
        self.stdout = stdout
        self.stderr = stderr
    }

    /// `tool` followed by `arguments`.
    public init(_ tool: String, _ arguments: [String], environment: [String: String] = [:],
                workingDirectory: String? = nil, input: Input = .null) {
        self.init([tool] + arguments, environment: environment, workingDirectory: workingDirectory, input: input)
    }

    public var tool: String { argv[0] }
}

/// How a child ended.
public enum Termination: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    public var succeeded: Bool { self == .exited(0) }

    /// The shell's number for it: the exit status, or 128 + the signal.
    public var status: Int32 {
        switch self {
        case .exited(let s): return s
        case .signaled(let s): return 128 + s
        }
    }

    public var description: String {
        switch self {
        case .exited(let s): return "exit \(s)"
        case .signaled(let s): return "signal \(s)\(Termination.signalName(s).map { " (\($0))" } ?? "")"
        }
    }

    static func signalName(_ s: Int32) -> String? {
        switch s {
        case SIGTERM: return "SIGTERM"
        case SIGKILL: return "SIGKILL"
        case SIGINT: return "SIGINT"
        case SIGSEGV: return "SIGSEGV"
        case SIGABRT: return "SIGABRT"
        case SIGPIPE: return "SIGPIPE"
        case SIGBUS: return "SIGBUS"
        case SIGILL: return "SIGILL"
        case SIGTRAP: return "SIGTRAP"
        default: return nil
        }
    }

    init(waitStatus s: Int32) {
        // <sys/wait.h>'s macros do not import: WIFEXITED is (s & 0x7f) == 0, WEXITSTATUS (s >> 8) & 0xff.
        if s & 0x7f == 0 { self = .exited((s >> 8) & 0xff) } else { self = .signaled(s & 0x7f) }
    }
}

/// A program that could not be started, failed, or ran out of time: the tool, its arguments, how
/// it ended and the end of what it wrote to stderr.
public struct ProcessError: Error, Sendable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable {
        /// posix_spawn (or what it needs) failed with this errno: typically ENOENT, no such tool.
        case cannotStart(errno: Int32)
        case failed(Termination)
        /// Still running after `seconds`: stopped with SIGTERM (SIGKILL if it lingered).
        case timedOut(seconds: Double, Termination)
    }

    public var argv: [String]
    public var reason: Reason
    /// The last lines of its stderr (or of its merged output), trimmed.
    public var stderrTail: String

    public init(argv: [String], reason: Reason, stderrTail: String) {
        self.argv = argv
        self.reason = reason
        self.stderrTail = stderrTail
    }

    public var tool: String { argv.first ?? "?" }

    public var description: String {
        let command = argv.joined(separator: " ")
        switch reason {
        case .cannotStart(let e):
            // posix_spawn reports a failed file action (an output file's directory missing, a
            // bad working directory) with the same errno as a missing program: say so.
            return "cannot start \(tool): \(String(cString: strerror(e)))" + (e == ENOENT ? " (the program, its working directory or an output file)" : "")
        case .failed(let t):
            return "\(command) failed (\(t))" + (stderrTail.isEmpty ? "" : ": \(stderrTail)")
        case let .timedOut(seconds, t):
            return "\(command) timed out after \(Command.format(seconds)) s (\(t))" + (stderrTail.isEmpty ? "" : ": \(stderrTail)")
        }
    }

    /// The last `lines` non-empty lines of `text`, joined with " | " (one line in a report).
    public static func tail(of text: String, lines: Int = 4) -> String {
        text.split(whereSeparator: \.isNewline)
            .map { $0.trimmingWhitespace() }
            .filter { !$0.isEmpty }
            .suffix(lines)
            .joined(separator: " | ")
    }
}

/// What a finished `run` returns.
public struct Completed: Sendable {
    public var argv: [String]
    public var termination: Termination
    /// Captured bytes (empty unless the stream was `.capture`).
    public var stdout: [UInt8]
    public var stderr: [UInt8]
    /// The deadline passed and the child was stopped; `termination` says how it ended then.
    public var timedOut: Bool
    public var timeout: Double?

    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }

    /// Throws `ProcessError` unless the child exited 0 in time.
    @discardableResult
    public func checked() throws -> Completed {
        if timedOut {
            throw ProcessError(argv: argv, reason: .timedOut(seconds: timeout ?? 0, termination), stderrTail: ProcessError.tail(of: stderrText))
        }
        guard termination.succeeded else {
            throw ProcessError(argv: argv, reason: .failed(termination), stderrTail: ProcessError.tail(of: stderrText))
        }
        return self
    }
}

extension Substring {
    func trimmingWhitespace() -> String {
        var s = self[...]
        while let c = s.first, c.isWhitespace { s = s.dropFirst() }
        while let c = s.last, c.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}

extension Command {
    static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }
}

extension Command {
    /// Where `tool` resolves on `PATH` (as `posix_spawnp` would find it), symlinks followed; nil
    /// when it is not there. A name with a "/" is taken as a path.
    public static func executablePath(of tool: String, path: String? = nil) -> String? {
        func resolved(_ p: String) -> String? {
            guard access(p, X_OK) == 0, let r = realpath(p, nil) else { return nil }
            defer { free(r) }
            return String(cString: r)
        }
        if tool.contains("/") { return resolved(tool) }
        let search = path ?? getenv("PATH").map { String(cString: $0) } ?? "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
        for dir in search.split(separator: ":") where !dir.isEmpty {
            if let r = resolved(String(dir) + "/" + tool) { return r }
        }
        return nil
    }
}
