import Foundation

/// Runs an external tool with arguments (no shell), capturing its output; a non-zero exit is a
/// `LabError` quoting the command and its stderr.
public enum Shell {
    public struct Output: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    @discardableResult
    public static func run(_ tool: String, _ arguments: [String], environment: [String: String] = [:],
                           currentDirectory: URL? = nil, input: String? = nil, check: Bool = true) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [tool] + arguments
        var env = ProcessInfo.processInfo.environment
        env["LC_ALL"] = "C"
        for (k, v) in environment { env[k] = v }
        process.environment = env
        if let currentDirectory { process.currentDirectoryURL = currentDirectory }
        let outPipe = Pipe(), errPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errPipe
        let inPipe = Pipe()
        process.standardInput = input == nil ? FileHandle.nullDevice : inPipe
        do { try process.run() } catch {
            throw LabError("cannot start \(tool): \(error.localizedDescription)")
        }
        if let input {
            inPipe.fileHandleForWriting.write(Data(input.utf8))
            try? inPipe.fileHandleForWriting.close()
        }
        // Drain both pipes concurrently so a chatty tool cannot block on a full pipe.
        let errData = Locked<Data>(Data())
        let errThread = Thread { errData.set(errPipe.fileHandleForReading.readDataToEndOfFile()) }
        errThread.start()
        let out = outPipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while !errData.done { usleep(1000) }
        let result = Output(status: process.terminationStatus,
                            stdout: String(decoding: out, as: UTF8.self),
                            stderr: String(decoding: errData.value, as: UTF8.self))
        if check && result.status != 0 {
            let detail = result.stderr.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").suffix(4).joined(separator: " | ")
            throw LabError("\(tool) \(arguments.joined(separator: " ")) failed (exit \(result.status)): \(detail)")
        }
        return result
    }

    public static func exists(_ tool: String) -> Bool {
        (try? run("sh", ["-c", "command -v \(tool)"], check: false).status) == 0
    }

    /// A minimal once-set box for the stderr reader thread.
    final class Locked<T: Sendable>: @unchecked Sendable {
        private let lock = NSLock()
        private var stored: T
        private var isDone = false
        init(_ v: T) { stored = v }
        func set(_ v: T) { lock.lock(); stored = v; isDone = true; lock.unlock() }
        var done: Bool { lock.lock(); defer { lock.unlock() }; return isDone }
        var value: T { lock.lock(); defer { lock.unlock() }; return stored }
    }
}
