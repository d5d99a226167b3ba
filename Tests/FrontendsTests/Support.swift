import Testing
import Foundation
import BlockCore
#if canImport(Glibc)
import Glibc
#endif

/// Scratch directory removed at the end of a test.
final class Scratch {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "bootlab-fe-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { path + "/" + name }
    func dir(_ name: String) -> String {
        let p = file(name)
        try! FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }
}

struct Bytes {
    var state: UInt64
    init(seed: UInt64) { state = seed | 1 }
    mutating func next() -> UInt64 {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return state
    }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
}

/// The build directory holding `bootlab` and `libbootlab-nbdkit.so` (where this test binary lives).
let productsDirectory: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var url = URL(fileURLWithPath: exe).deletingLastPathComponent()
    // SwiftPM runs `.build/debug/BootLabPackageTests.xctest`; walk up until bootlab is found.
    for _ in 0..<4 {
        if FileManager.default.isExecutableFile(atPath: url.appendingPathComponent("bootlab").path) { return url.path }
        url.deleteLastPathComponent()
    }
    return URL(fileURLWithPath: exe).deletingLastPathComponent().path
}()

var bootlabPath: String { productsDirectory + "/bootlab" }

struct RunResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a tool to completion with a bounded wait (killed past `timeout`).
@discardableResult
func run(_ tool: String, _ args: [String], timeout: Double = 60, environment: [String: String]? = nil) throws -> RunResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tool.hasPrefix("/") ? tool : "/usr/bin/env")
    p.arguments = tool.hasPrefix("/") ? args : [tool] + args
    if let environment { p.environment = environment }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // Drain pipes concurrently so a chatty tool never blocks on a full pipe.
    let outData = Locked(Data()), errData = Locked(Data())
    let group = DispatchGroup()
    for (pipe, sink) in [(out, outData), (err, errData)] {
        group.enter()
        DispatchQueue.global().async {
            let d = pipe.fileHandleForReading.readDataToEndOfFile()
            sink.withLock { $0 = d }
            group.leave()
        }
    }
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(10_000) }
    if p.isRunning { kill(p.processIdentifier, SIGKILL) }
    p.waitUntilExit()
    group.wait()
    return RunResult(status: p.terminationStatus,
                     stdout: String(decoding: outData.current, as: UTF8.self),
                     stderr: String(decoding: errData.current, as: UTF8.self))
}

/// A server (mount or NBD) running as a child process; killed in `stop`/deinit.
final class Server {
    let process = Process()
    let logPath: String

    /// Runs `executable ARGS` (bootlab by default) with `environment` (default: inherited).
    init(_ args: [String], log: String, executable: String = bootlabPath, environment: [String: String]? = nil) throws {
        logPath = log
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let h = FileHandle(forWritingAtPath: log)!
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = args
        if let environment { process.environment = environment }
        process.standardOutput = h
        process.standardError = h
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func signal(_ sig: Int32) { if process.isRunning { kill(pid, sig) } }

    /// Sends `sig` and waits (bounded) for the exit; returns the exit status.
    @discardableResult
    func stop(_ sig: Int32 = SIGTERM, timeout: Double = 15) -> Int32 {
        signal(sig)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { if process.isRunning { stop(SIGKILL) } }
}

/// Polls `cond` every 20 ms for up to `timeout` seconds.
func waitFor(_ timeout: Double = 15, _ cond: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if cond() { return true }
        usleep(20_000)
    }
    return cond()
}

func isMounted(_ mountpoint: String) -> Bool {
    let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
    return mounts.split(separator: "\n").contains { $0.split(separator: " ").dropFirst().first.map(String.init) == mountpoint }
}

func unmount(_ mountpoint: String) {
    if isMounted(mountpoint) { _ = try? run("fusermount3", ["-u", "-z", mountpoint], timeout: 10) }
}

func sha256(ofFile path: String) throws -> String {
    try SHA256.hash(RawFile(path: path)).hex
}

/// Why FUSE tests cannot run here, or nil.
func fuseUnavailable() -> String? {
    if getuid() != 0 { return "not root (/dev/fuse is root-only on this platform)" }
    if access("/dev/fuse", R_OK | W_OK) != 0 { return "/dev/fuse is not usable" }
    return toolsMissing(["fusermount3", "qemu-img", "qemu-io"])
}

func toolsMissing(_ tools: [String]) -> String? {
    for t in tools where (try? run("which", [t], timeout: 10))?.status != 0 { return "\(t) is not installed (ci/packages/frontends.txt)" }
    return nil
}

/// What this machine lacks for the FUSE tests (nil: nothing), checked once per test run.
let fuseMissing: String? = fuseUnavailable()
/// What this machine lacks for the NBD tests (nil: nothing), checked once per test run.
let nbdMissing: String? = nbdUnavailable()

extension Trait where Self == ConditionTrait {
    /// Runs the test only where FUSE works; otherwise Swift Testing reports it as skipped, with the
    /// missing capability as the reason (and ci/test fails on any skip when CI=true).
    static var requiresFUSE: Self {
        .enabled(if: fuseMissing == nil, Comment(rawValue: "platform lacks a capability: \(fuseMissing ?? "")"))
    }
    /// Runs the test only where nbdkit and its tools are installed; otherwise a reported skip.
    static var requiresNBD: Self {
        .enabled(if: nbdMissing == nil, Comment(rawValue: "platform lacks a capability: \(nbdMissing ?? "")"))
    }
}

struct StatsDoc: Decodable { var sources: [SourceStatistics] }

func readStats(_ path: String) -> StatsDoc? {
    guard let d = FileManager.default.contents(atPath: path) else { return nil }
    return try? JSONDecoder().decode(StatsDoc.self, from: d)
}

/// Writes a test disk: random data, a hole, and an odd tail (size not a multiple of 4 KiB).
func makeDisk(_ path: String, seed: UInt64, dataBytes: Int = 3 << 20, size: UInt64 = (8 << 20) + 1536) throws -> [UInt8] {
    var rng = Bytes(seed: seed)
    let f = try RawFile.create(path: path, size: size)
    let data = rng.bytes(dataBytes)
    try f.write(at: 0, data)
    let tail = rng.bytes(1000)
    try f.write(at: size - 1000, tail)
    return try f.read(at: 0, count: Int(size))
}

/// First offset where two byte arrays differ (or the shorter length), nil when equal. Tests compare
/// large buffers through this: an `#expect(a == b)` failure on megabytes makes Swift Testing diff
/// the arrays, which takes minutes.
func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int? {
    if a == b { return nil }
    for i in 0..<min(a.count, b.count) where a[i] != b[i] { return i }
    return min(a.count, b.count)
}
