import Foundation
import Processes

/// What one execution of the fuzzed program on one input came to. Exit codes of clean rejections
/// are not findings: only signals, timeouts, sanitizer reports and (with an oracle) disagreements.
public enum Verdict: String, Sendable, Codable, Equatable {
    case pass
    case crash
    case hang
    case sanitizer
    case differential

    public var isFinding: Bool { self != .pass }
}

public struct Execution: Sendable {
    public var verdict: Verdict
    /// "exit 2", "signal 11 (SIGSEGV)", "timeout after 5 s", "in-process: <error>".
    public var outcome: String
    /// Deduplication key: verdict, signal, top frames (or the normalized last error line).
    public var signature: String
    public var stderrTail: String
    /// One byte per edge of an instrumented program (1 = reached), when it wrote them.
    public var coverage: [UInt8]?
    /// The exit status, or 128 + signal.
    public var status: Int32
}

/// How inputs reach the program under test.
public enum TargetSpec: Sendable {
    /// `argv` with `@@` replaced by the input's path, or the input on stdin when there is no `@@`.
    case command([String])
    /// BootLab's own reader for the format, in this process (no spawn).
    case inProcess
}

/// Runs inputs for one worker: its own directory, input file and coverage file.
public final class Executor: @unchecked Sendable {
    let target: TargetSpec
    let oracle: [String]?
    let timeout: Double
    let format: any FuzzFormat
    let collectCoverage: Bool
    public let directory: String
    public let inputPath: String
    let coveragePath: String

    public init(target: TargetSpec, oracle: [String]?, timeout: Double, format: any FuzzFormat, collectCoverage: Bool,
                directory: String) throws(FuzzError) {
        self.target = target
        self.oracle = oracle
        self.timeout = timeout
        self.format = format
        self.collectCoverage = collectCoverage
        self.directory = directory
        try FileSystem.makeDirectory(directory)
        inputPath = "\(directory)/input.\(format.fileExtension)"
        coveragePath = "\(directory)/coverage.bin"
    }

    /// `argv` with every `@@` replaced by `path`; nil when no argument holds `@@` (stdin mode).
    public static func substitute(_ argv: [String], path: String) -> [String]? {
        guard argv.contains(where: { $0.contains("@@") }) else { return nil }
        return argv.map { $0.replacingOccurrences(of: "@@", with: path) }
    }

    /// What the input file holds now, so the next input rewrites only the 64 KiB pieces that differ.
    var written: [UInt8]?

    func store(_ bytes: [UInt8]) throws(FuzzError) {
        guard let old = written, FileSystem.isRegularFile(inputPath) else {
            try FileSystem.write(bytes, to: inputPath)
            written = bytes
            return
        }
        let fd = open(inputPath, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .file(inputPath, reason: "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        // A truncated (or regrown) mutant of the same parent: cut or extend, then rewrite only
        // the pieces of the common prefix that differ, and what lies past the old end.
        if old.count != bytes.count, ftruncate(fd, off_t(bytes.count)) != 0 {
            throw .file(inputPath, reason: "truncate failed: \(String(cString: strerror(errno)))")
        }
        let piece = 1 << 16
        let common = min(old.count, bytes.count)
        let failed: Bool = bytes.withUnsafeBytes { new in
            old.withUnsafeBytes { was in
                var at = 0
                while at < new.count {
                    let n = min(piece, new.count - at)
                    let same = at + n <= common && memcmp(new.baseAddress! + at, was.baseAddress! + at, n) == 0
                    if !same, pwrite(fd, new.baseAddress! + at, n, off_t(at)) != n { return true }
                    at += n
                }
                return false
            }
        }
        if failed { throw .file(inputPath, reason: "write failed: \(String(cString: strerror(errno)))") }
        written = bytes
    }

    public func run(_ bytes: [UInt8]) throws(FuzzError) -> Execution {
        try store(bytes)
        switch target {
        case .inProcess: return InProcess.run(format: format, path: inputPath, timeout: timeout)
        case .command(let argv):
            var e = try spawn(argv, bytes: bytes, coverage: collectCoverage)
            if e.verdict == .pass, let oracle, e.status == 0 {
                let mine = e.stdout
                let theirs = try spawn(oracle, bytes: bytes, coverage: false)
                if theirs.execution.verdict == .pass, theirs.execution.status == 0, theirs.stdout != mine {
                    let at = (0..<min(mine.count, theirs.stdout.count)).first { mine[$0] != theirs.stdout[$0] } ?? min(mine.count, theirs.stdout.count)
                    e.execution.verdict = .differential
                    e.execution.signature = "differential: outputs differ (\(mine.count) vs \(theirs.stdout.count) bytes)"
                    e.execution.outcome = "both exit 0; first difference at byte \(at)"
                }
            }
            return e.execution
        }
    }

    struct Spawned { var execution: Execution; var stdout: [UInt8]
        var verdict: Verdict { get { execution.verdict } set { execution.verdict = newValue } }
        var status: Int32 { execution.status }
    }

    func spawn(_ argv: [String], bytes: [UInt8], coverage: Bool) throws(FuzzError) -> Spawned {
        var argv = argv
        // Runs happen in the worker's directory: a relative program path is the caller's.
        if argv[0].contains("/"), !argv[0].hasPrefix("/") {
            argv[0] = FileManager.default.currentDirectoryPath + "/" + argv[0]
        }
        let args = Self.substitute(argv, path: inputPath)
        // Swift programs print their backtrace (frames for deduplication), not interactively.
        var env: [String: String] = ["SWIFT_BACKTRACE": "enable=yes,interactive=no,color=no,threads=crashed,registers=none,images=none"]
        if ProcessInfo.processInfo.environment["ASAN_OPTIONS"] == nil { env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0" }
        if coverage { env["BOOTLAB_COV_FILE"] = coveragePath; FileSystem.remove(coveragePath) }
        let cmd = Command(args ?? argv, environment: env, workingDirectory: directory,
                          input: args == nil ? .bytes(bytes) : .null, stdout: .capture, stderr: .capture)
        let c: Completed
        do { c = try cmd.run(timeout: timeout, grace: 1, check: false) }
        catch { throw .cannotRun("\(argv.joined(separator: " ")): \(error)") }
        let err = c.stderrText
        let tail = Self.tail(err)
        var e = Execution(verdict: .pass, outcome: c.termination.description, signature: "", stderrTail: tail,
                          coverage: coverage ? FileSystem.readIfPresent(coveragePath) : nil, status: c.termination.status)
        if c.timedOut {
            e.verdict = .hang
            e.outcome = "timeout after \(timeout) s"
            e.signature = "hang"
        } else if let line = Self.sanitizerLine(err) {
            e.verdict = .sanitizer
            e.signature = "sanitizer: \(Self.normalize(line)) | \(Self.topFrames(err).joined(separator: " < "))"
        } else if case .signaled(let s) = c.termination {
            e.verdict = .crash
            let frames = Self.topFrames(err)
            e.signature = "signal \(s): " + (frames.isEmpty ? Self.normalize(Self.lastLine(err)) : frames.joined(separator: " < "))
        }
        return Spawned(execution: e, stdout: c.stdout)
    }

    static func tail(_ text: String, lines: Int = 12) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: true).suffix(lines).joined(separator: "\n")
    }

    static func lastLine(_ text: String) -> String {
        text.split(separator: "\n").last(where: { !$0.trimmingCharacters(in: .whitespaces).isEmpty }).map(String.init) ?? ""
    }

    /// The first line of an AddressSanitizer/UBSan/MSan report.
    static func sanitizerLine(_ text: String) -> String? {
        for line in text.split(separator: "\n") {
            if line.contains("ERROR: AddressSanitizer") || line.contains("ERROR: MemorySanitizer")
                || line.contains("runtime error:") || line.contains("ERROR: UndefinedBehaviorSanitizer") {
                return String(line)
            }
        }
        return nil
    }

    /// Up to three function names of the first stack trace (sanitizer `#N 0x… in f` lines, or
    /// Swift "Fatal error" text).
    static func topFrames(_ text: String) -> [String] {
        var frames: [String] = []
        for line in text.split(separator: "\n") {
            let t = line.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("#"), let r = t.range(of: " in ") else { continue }
            let fn = t[r.upperBound...].split(separator: " ").first.map(String.init) ?? "?"
            if fn.hasPrefix("__asan") || fn.hasPrefix("__sanitizer") || fn.hasPrefix("__interceptor") { continue }
            frames.append(fn)
            if frames.count == 3 { break }
        }
        if frames.isEmpty {
            // Swift's backtracer: "  1 [ra] 0x… static Reader.open(path:) + 21 in bootlab at /src/Reader.swift:137:48".
            for line in text.split(separator: "\n") {
                let t = line.trimmingCharacters(in: .whitespaces)
                guard let first = t.split(separator: " ").first, Int(first) != nil, let a = t.range(of: " 0x") else { continue }
                var fn = t[a.upperBound...].drop { $0 != " " }.dropFirst()
                if let plus = fn.range(of: " + ") { fn = fn[..<plus.lowerBound] } else if let inn = fn.range(of: " in ") { fn = fn[..<inn.lowerBound] }
                if fn.contains("<compiler-generated>") || fn.hasPrefix("thunk") || fn.isEmpty { continue }
                frames.append(String(fn.prefix(120)))
                if frames.count == 3 { break }
            }
        }
        if frames.isEmpty, let f = text.split(separator: "\n").first(where: { $0.contains("Fatal error") }) { frames.append(normalize(String(f))) }
        return frames
    }

    /// Digits and addresses removed, so equal causes compare equal.
    static func normalize(_ s: String) -> String {
        var out = "", lastDigit = false
        for ch in s.replacingOccurrences(of: "0x", with: "") {
            if ch.isHexDigit && ch.isNumber || (lastDigit && ch.isHexDigit) { if !lastDigit { out.append("#") }; lastDigit = true }
            else { out.append(ch); lastDigit = false }
        }
        return String(out.prefix(160))
    }
}
