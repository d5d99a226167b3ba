import Foundation
import Processes

/// A finished tool as tests look at it: status (the shell's number: 128 + signal when killed) and
/// both streams as text.
public struct RunResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs `tool` (on PATH, or a path) to completion through `Processes.Command`, never throwing
/// for a non-zero status (tests assert on it). Past `timeout` seconds it is stopped (SIGTERM,
/// then SIGKILL). `environment`, when given, is the child's whole environment (tests that decide
/// every variable, e.g. whether a passphrase is set); nil inherits ours.
@discardableResult
public func run(_ tool: String, _ args: [String], timeout: Double = 60, environment: [String: String]? = nil,
                input: [UInt8]? = nil) throws -> RunResult {
    var c = Command([tool] + args, environment: environment ?? [:], inheritsEnvironment: environment == nil)
    if let input { c.input = .bytes(input) }
    let r = try c.run(timeout: timeout, check: false)
    return RunResult(status: r.termination.status, stdout: r.stdoutText, stderr: r.stderrText)
}

/// A server (mount, NBD, nbdkit) running as a child process, its stdout and stderr in one log;
/// stopped in `stop` or, at the latest, when the value goes away.
public final class Server: @unchecked Sendable {
    // @unchecked: immutable after init; ChildProcess is Sendable.
    public let process: ChildProcess
    public let logPath: String

    /// Runs `executable ARGS` with `environment` (nil: inherited; otherwise the whole environment).
    public init(_ args: [String], log: String, executable: String = bootlabPath, environment: [String: String]? = nil) throws {
        logPath = log
        process = try Command([executable] + args, environment: environment ?? [:], inheritsEnvironment: environment == nil,
                              stdout: .file(log, append: false), stderr: .stdout).spawn()
    }

    public var pid: Int32 { process.pid }
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    public var isRunning: Bool { process.isRunning }

    public func signal(_ sig: Int32) { process.signal(sig) }

    /// Sends `sig`, waits up to `timeout` seconds for the exit (SIGKILL after that); returns the
    /// exit status (the signal's number when a signal ended it, as Foundation's Process said).
    @discardableResult
    public func stop(_ sig: Int32 = SIGTERM, timeout: Double = 15) -> Int32 {
        process.signal(sig)
        let ended = process.wait(timeout: timeout) ?? { process.signal(SIGKILL); return process.wait()! }()
        switch ended {
        case .exited(let s), .signaled(let s): return s
        }
    }

    deinit { if process.isRunning { stop(SIGKILL) } }
}

/// Checks `cond` every 20 ms for up to `timeout` seconds.
public func waitFor(_ timeout: Double = 15, _ cond: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if cond() { return true }
        usleep(20_000)
    }
    return cond()
}

/// The build directory holding `bootlab` and `libbootlab-nbdkit.so` (where this test binary lives).
public let productsDirectory: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var url = URL(fileURLWithPath: exe).deletingLastPathComponent()
    // SwiftPM runs `.build/debug/BootLabPackageTests.xctest`; walk up until bootlab is found.
    for _ in 0..<4 {
        if FileManager.default.isExecutableFile(atPath: url.appendingPathComponent("bootlab").path) { return url.path }
        url.deleteLastPathComponent()
    }
    return URL(fileURLWithPath: exe).deletingLastPathComponent().path
}()

public var bootlabPath: String { productsDirectory + "/bootlab" }

/// Unmounts a FUSE mount a test made. Right after the last read the kernel may still hold the
/// file (`fusermount3 -u` says "Device or resource busy"): a single try left a `vhdimount`
/// mounted after every suite run. Retries for up to 5 s, then detaches lazily so nothing
/// outlives the test.
public func unmountFUSE(_ mnt: String) {
    for _ in 0..<50 {
        if (try? run("fusermount3", ["-u", mnt]))?.status == 0 { return }
        usleep(100_000)
    }
    _ = try? run("fusermount3", ["-u", "-z", mnt])
}
