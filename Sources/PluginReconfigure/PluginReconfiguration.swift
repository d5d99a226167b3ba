import BackupImage
import BlockCore
import Exposure
import Foundation
import Processes
import Reconfigure
#if canImport(Glibc)
import Glibc
#endif

/// Reconfigures the OS behind a plugin file: the engine inspects the plugin's composed disk
/// (exported raw over NBD by a `bootlab serve --raw` child, which the engine's QEMU opens as
/// `nbd+unix:///?socket=S`), writes its changes into the plugin's reconfiguration layer, and the
/// plugin is re-rendered so the served VHDX (and `--raw`) show the reconfigured disk. The backup
/// is only read. A second run finds nothing to do and leaves every file as it was.
public enum PluginReconfiguration {
    public struct Options: Sendable {
        public var target: String
        public var drivers: DriverDatabase
        /// The `bootlab` executable that serves the composed disk (`bootlab serve --raw`).
        public var bootlabExecutable: String
        /// How the backup is opened (passphrase, vault, --allow-outside); the same reach the child.
        public var access: PluginFile.OpenOptions
        public var dryRun: Bool
        /// Scratch space for the socket and the engine's overlay (default: the temporary directory).
        public var workDirectory: URL?
        /// A deliberate fault (`--inject-fault omit-driver:NAME`, `ReconfigureOptions.omitModules`); empty in real use.
        public var omitModules: [String] = []

        public init(target: String, drivers: DriverDatabase, bootlabExecutable: String,
                    access: PluginFile.OpenOptions = .init(), dryRun: Bool = false, workDirectory: URL? = nil) {
            self.target = target
            self.drivers = drivers
            self.bootlabExecutable = bootlabExecutable
            self.access = access
            self.dryRun = dryRun
            self.workDirectory = workDirectory
        }
    }

    /// The engine's report plus what happened to the layer and the plugin.
    public struct Result: Codable, Sendable {
        public var plugin: String
        public var report: ReconfigurationReport
        /// Nil in a dry run (nothing recorded).
        public var layer: PluginFile.LayerRecord?
        public var seconds: Double
    }

    /// Failures of the `bootlab serve --raw` child, named with what it said: its state (running,
    /// exit status or signal) and the last lines of its log.
    public enum Failure: Error, CustomStringConvertible {
        /// The child did not come up (it exited, or made no socket in time).
        case server(String)
        /// The child listens, but the disk it serves cannot be read (a read through NBD failed).
        case unreadable(child: String, read: String, log: String)
        /// The engine failed while the child had exited or logged errors.
        case child(child: String, log: String, engine: String)

        public var description: String {
            switch self {
            case .server(let s):
                return "serving the composed disk over NBD failed: \(s)"
            case let .unreadable(child, read, log):
                return "the composed disk served over NBD cannot be read (\(read)); \(child); its log ends: \(log)"
            case let .child(child, log, engine):
                return "reconfiguration failed while serving the composed disk over NBD: \(child); its log ends: \(log); the engine then reported: \(engine)"
            }
        }
    }

    public static func run(pluginPath: String, options: Options) throws -> Result {
        let start = Date()
        guard PluginFile.isPlugin(path: pluginPath) else { throw PluginFile.PluginError.notAPlugin(pluginPath) }
        let base = options.workDirectory ?? FileManager.default.temporaryDirectory
        // Unix socket paths are short (108 bytes): keep the scratch name small.
        let work = base.appendingPathComponent("blrc-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let socket = work.appendingPathComponent("nbd.sock").path

        // Opening the layer opens the backup here, in this process, before any child or appliance
        // starts: a wrong passphrase (or a missing one, a wrong vault, a replaced backup) fails
        // now, in well under a second, with its own error — not after a 15 s appliance launch.
        let layer = try PluginFile.openReconfigurationLayer(pluginPath: pluginPath, options: options.access)
        let server = try startServer(pluginPath: pluginPath, socket: socket, work: work, options: options)
        defer { server.stop() }
        try server.waitUntilListening(timeout: 30)
        // The child opens the backup on its first read: read once, so a child that cannot (say, it
        // did not get the passphrase) is reported as such rather than as a disk without an OS.
        try server.checkReadable(timeout: 120)

        let report: ReconfigurationReport
        do {
            report = try Reconfigurator.reconfigure(
                image: DiskImage(path: "nbd+unix:///?socket=\(socket)", format: "raw"), layer: layer,
                target: options.target, drivers: options.drivers,
                options: ReconfigureOptions(dryRun: options.dryRun, workDirectory: work, omitModules: options.omitModules))
        } catch {
            // A child that died or logged errors meanwhile explains the failure better than the
            // engine can (libguestfs only sees I/O errors).
            if let trouble = server.trouble() { throw Failure.child(child: trouble, log: server.logTail(), engine: "\(error)") }
            throw error
        }
        server.stop()
        var record: PluginFile.LayerRecord?
        if !options.dryRun {
            record = try PluginFile.recordReconfiguration(pluginPath: pluginPath, target: options.target, options: options.access)
        }
        return Result(plugin: pluginPath, report: report, layer: record, seconds: Date().timeIntervalSince(start))
    }

    // MARK: the NBD child

    final class Server: @unchecked Sendable {
        // @unchecked: used from the calling thread only.
        let process: ChildProcess
        let socket: String
        let log: URL
        private var stopped = false

        init(process: ChildProcess, socket: String, log: URL) {
            self.process = process
            self.socket = socket
            self.log = log
        }

        func waitUntilListening(timeout: Double) throws {
            var waited = 0.0
            while !isListening() {
                guard process.isRunning else {
                    throw Failure.server("\(state()); its log ends: \(logTail())")
                }
                guard waited < timeout else { throw Failure.server("no socket after \(Int(timeout)) s (\(state())); its log ends: \(logTail())") }
                usleep(50_000)
                waited += 0.05
            }
        }

        var nbdURI: String { "nbd+unix:///?socket=\(socket)" }

        /// Reads the served disk's first sector through NBD (`qemu-io`, as the engine's QEMU would).
        func checkReadable(timeout: Double) throws {
            let (status, output) = try PluginReconfiguration.runTool(
                ["qemu-io", "-r", "-f", "raw", "-c", "read 0 512", nbdURI], timeout: timeout)
            guard status != 0 else { return }
            let what = output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.last ?? "no output"
            throw Failure.unreadable(child: state(), read: "qemu-io read of sector 0 exited \(status): \(what)", log: logTail())
        }

        /// The child's state in words: still running (pid), or how it ended.
        func state() -> String {
            let name = "the bootlab serve --raw child (pid \(process.pid))"
            switch process.termination {
            case nil: return "\(name) is running"
            case .exited(let status): return "\(name) exited with status \(status)"
            case .signaled(let signal): return "\(name) was killed by signal \(signal)"
            }
        }

        /// Why the child may have caused a failure: it ended, or it logged errors. Nil when it
        /// still runs and logged none.
        func trouble() -> String? {
            if !process.isRunning { return state() }
            let log = (try? String(contentsOf: self.log, encoding: .utf8)) ?? ""
            return log.contains("error") ? "\(state()) and logged errors" : nil
        }

        /// A connect succeeds once the child made its socket (nbdkit accepts from the backlog).
        private func isListening() -> Bool {
            let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(socket.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return false }
            withUnsafeMutableBytes(of: &addr.sun_path) { p in
                p.copyBytes(from: bytes)
                p[bytes.count] = 0
            }
            let r = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            return r == 0
        }

        /// The last lines of the child's log (stdout and stderr), repeated lines counted once.
        func logTail(lines: Int = 8) -> String {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            var kept: [(line: String, count: Int)] = []
            for line in text.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) where !line.isEmpty {
                if kept.last?.line == line { kept[kept.count - 1].count += 1 } else { kept.append((line, 1)) }
            }
            guard !kept.isEmpty else { return "(empty)" }
            return kept.suffix(lines).map { $0.count > 1 ? "\($0.line) (×\($0.count))" : $0.line }.joined(separator: " | ")
        }

        /// SIGTERM to the child (nbdkit, same PID after exec), then wait; SIGKILL if it lingers 5 s.
        func stop() {
            guard !stopped else { return }
            stopped = true
            process.terminate(grace: 5)
        }
    }

    /// Runs a tool found on PATH, bounded by `timeout` seconds (then stopped); returns its exit
    /// status and its output (stdout and stderr together).
    static func runTool(_ argv: [String], timeout: Double) throws -> (status: Int32, output: String) {
        let r = try Command(argv, stderr: .stdout).run(timeout: timeout, check: false)
        return r.timedOut ? (-1, "\(argv[0]) timed out after \(Int(timeout)) s: \(r.stdoutText)") : (r.termination.status, r.stdoutText)
    }

    static func startServer(pluginPath: String, socket: String, work: URL, options: Options) throws -> Server {
        var args = [options.bootlabExecutable, "serve", pluginPath, "--raw", "--socket", socket]
        if let v = options.access.vault { args += ["--vault", v] }
        if options.access.allowOutside { args.append("--allow-outside") }
        // An external source: the same allowance, bound and expected ID as this process has.
        args += options.access.allowedSourcePlugins.sorted().flatMap { ["--allow-source-plugin", $0] }
        args += ["--source-timeout", "\(options.access.sourceTimeout)"]
        if let id = options.access.sourceID { args += ["--source-id", id] }
        var env: [String: String] = [:]
        // The passphrase reaches the child through its environment, never its argv.
        if let source = options.access.passphrase {
            env[PassphraseSource.defaultEnvironmentVariable] = String(decoding: try source.resolve(), as: UTF8.self)
        }
        let log = work.appendingPathComponent("serve.log")
        // stderr follows stdout: one descriptor, or each would write from offset 0 over the other's lines.
        let command = Command(args, environment: env, stdout: .file(log.path, append: false), stderr: .stdout)
        return Server(process: try command.spawn(), socket: socket, log: log)
    }
}
