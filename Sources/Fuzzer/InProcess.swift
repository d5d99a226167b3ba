import Foundation

/// BootLab's own readers run in this process (faster than spawning). A thrown error is a clean
/// rejection. A crash kills the fuzzer itself, so before each run a line naming the run's input
/// is prepared; a signal handler writes it to stderr (async-signal-safe `write`) before dying
/// with the same signal, and the input file stays where it was. A run longer than the timeout is
/// reported by a watchdog the same way (SIGALRM-free: one thread per process).
public enum InProcess {
    nonisolated(unsafe) static var crashNote = [UInt8](repeating: 0, count: 4096)
    nonisolated(unsafe) static var crashNoteLength = 0
    nonisolated(unsafe) static var handlersInstalled = false
    static let lock = NSLock()
    nonisolated(unsafe) static var running: [String: Date] = [:]
    nonisolated(unsafe) static var watchdogTimeout: Double = 0

    /// The line the crash handler prints (set once per campaign, with the input directory).
    public static func prepare(note: String, timeout: Double) {
        lock.lock(); defer { lock.unlock() }
        let bytes = Array(note.utf8.prefix(4000)) + [10]
        crashNote.withUnsafeMutableBufferPointer { p in for (i, b) in bytes.enumerated() { p[i] = b } }
        crashNoteLength = bytes.count
        watchdogTimeout = timeout
        guard !handlersInstalled else { return }
        handlersInstalled = true
        for s in [SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGABRT, SIGFPE] {
            signal(s) { sig in
                InProcess.crashNote.withUnsafeBufferPointer { p in _ = write(2, p.baseAddress, InProcess.crashNoteLength) }
                signal(sig, SIG_DFL)
                raise(sig)
            }
        }
        let t = Thread {
            while true {
                Thread.sleep(forTimeInterval: 0.1)
                lock.lock()
                let late = running.first { Date().timeIntervalSince($0.value) > watchdogTimeout }
                lock.unlock()
                if let late {
                    let msg = "bootlab fuzz: in-process reader hung (> \(watchdogTimeout) s) on \(late.key)\n"
                    FileHandle.standardError.write(msg.data(using: .utf8)!)
                    crashNote.withUnsafeBufferPointer { p in _ = write(2, p.baseAddress, crashNoteLength) }
                    _exit(124)
                }
            }
        }
        t.start()
    }

    static func run(format: any FuzzFormat, path: String, timeout: Double) -> Execution {
        lock.lock(); running[path] = Date(); lock.unlock()
        defer { lock.lock(); running[path] = nil; lock.unlock() }
        do {
            try format.readInProcess(path: path)
            return Execution(verdict: .pass, outcome: "read", signature: "", stderrTail: "", coverage: nil, status: 0)
        } catch {
            return Execution(verdict: .pass, outcome: "rejected: \(String(describing: error).prefix(200))", signature: "",
                             stderrTail: "", coverage: nil, status: 1)
        }
    }
}
