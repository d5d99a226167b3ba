import BlockCore
import Foundation
import Processes
#if canImport(Glibc)
import Glibc
#endif

/// A server we start for a source (nbdkit running the user's plugin, or qemu-nbd) on a Unix
/// socket in a private directory (mode 0700), with its standard error kept in a file there so a
/// failure can say what the program said. It lives as long as the source that reads it; nbdkit
/// and qemu-nbd get `--exit-with-parent`-like treatment: nbdkit's own flag, and a SIGTERM from
/// `deinit` for both.
public final class SourceServer: Sendable {
    public let argv: [String]
    public let socketPath: String
    let directory: String
    let child: ChildProcess

    /// Starts `argv` (a program that serves NBD on the socket `argv` names: build it with
    /// `socketPath(in:)`) in `workingDirectory` and waits, at most `timeout` seconds, until the
    /// socket accepts connections. A program that exits first → `startFailed` with its stderr;
    /// one still not serving at the deadline is stopped → `startTimeout`.
    static func start(_ make: (String) -> [String], workingDirectory: String, timeout: Double) throws -> SourceServer {
        var template = Array((NSTemporaryDirectory() + "/bootlab-source-XXXXXX").utf8CString)
        guard let dirPtr = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw IOError("mkdtemp", path: NSTemporaryDirectory(), errno: errno)
        }
        let dir = String(cString: dirPtr)
        let socket = dir + "/nbd.sock", log = dir + "/stderr.log"
        let argv = make(socket)
        let child: ChildProcess
        do {
            let command = Command(argv, workingDirectory: workingDirectory, input: .null, stdout: .null, stderr: .file(log, append: false))
            child = try SpawnThread.shared.spawn(command)
        } catch {
            try? FileManager.default.removeItem(atPath: dir)
            throw SourceError.startFailed(command: argv, status: "could not be started (\(error))", stderr: "")
        }
        let server = SourceServer(argv: argv, socketPath: socket, directory: dir, child: child)
        let deadline = NBDSource.now + timeout
        while true {
            if let t = child.wait(timeout: 0) {
                throw SourceError.startFailed(command: argv, status: "\(t)", stderr: server.stderrText)
            }
            if Self.accepts(socket) { return server }
            let ms = NBDSource.milliseconds(until: deadline)
            if ms == 0 {
                child.terminate(grace: 1)
                throw SourceError.startTimeout(command: argv, seconds: timeout, stderr: server.stderrText)
            }
            // Waits on the child's pidfd: returns at once if it exits, else after 20 ms.
            _ = child.wait(timeout: min(0.02, Double(ms) / 1000))
        }
    }

    init(argv: [String], socketPath: String, directory: String, child: ChildProcess) {
        self.argv = argv
        self.socketPath = socketPath
        self.directory = directory
        self.child = child
    }

    deinit {
        child.terminate(grace: 2)
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// What the server wrote on standard error so far (the last 8 KiB).
    public var stderrText: String {
        guard let f = try? RawFile(path: directory + "/stderr.log"), f.size > 0 else { return "" }
        let n = min(f.size, 8192)
        return String(decoding: (try? f.read(at: f.size - n, count: Int(n))) ?? [], as: UTF8.self)
    }

    /// True when something accepts connections on the Unix socket at `path`.
    static func accepts(_ path: String) -> Bool {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            p.copyBytes(from: bytes)
            p[bytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return r == 0
    }

    /// The NBD URI of the socket.
    public var uri: String { "nbd+unix:///?socket=" + socketPath }
}

/// Starts children from one thread that lives as long as the process. nbdkit's
/// `--exit-with-parent` (PR_SET_PDEATHSIG) fires when the *thread* that started the child ends,
/// not the process: a source started from an nbdkit connection thread or a FUSE worker would be
/// killed when that client disconnects. Started from here, it ends with the process only.
final class SpawnThread: @unchecked Sendable {
    // @unchecked: `jobs` only under `condition`.
    static let shared = SpawnThread()
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []

    private init() {
        let thread = Thread { [unowned self] in self.loop() }
        thread.name = "bootlab-source-spawner"
        thread.start()
    }

    private func loop() {
        while true {
            condition.lock()
            while jobs.isEmpty { condition.wait() }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
        }
    }

    func spawn(_ command: Command) throws -> ChildProcess {
        let result = Locked<Result<ChildProcess, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        condition.lock()
        jobs.append {
            result.withLock { $0 = Result { try command.spawn() } }
            done.signal()
        }
        condition.signal()
        condition.unlock()
        done.wait()
        return try result.current!.get()
    }
}
