import BackupImage
import BlockCore
import Exposure
import Foundation
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

    public enum Failure: Error, CustomStringConvertible {
        case server(String)
        public var description: String {
            switch self {
            case .server(let s): return "serving the composed disk over NBD failed: \(s)"
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

        let layer = try PluginFile.openReconfigurationLayer(pluginPath: pluginPath, options: options.access)
        let server = try startServer(pluginPath: pluginPath, socket: socket, work: work, options: options)
        defer { server.stop() }
        try server.waitUntilListening(timeout: 30)

        let report = try Reconfigurator.reconfigure(
            image: DiskImage(path: "nbd+unix:///?socket=\(socket)", format: "raw"), layer: layer,
            target: options.target, drivers: options.drivers,
            options: ReconfigureOptions(dryRun: options.dryRun, workDirectory: work))
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
        let process: Process
        let socket: String
        let log: URL
        private var stopped = false

        init(process: Process, socket: String, log: URL) {
            self.process = process
            self.socket = socket
            self.log = log
        }

        func waitUntilListening(timeout: Double) throws {
            var waited = 0.0
            while !isListening() {
                guard process.isRunning else {
                    throw Failure.server("bootlab serve exited: \(logTail())")
                }
                guard waited < timeout else { throw Failure.server("no socket after \(Int(timeout)) s: \(logTail())") }
                usleep(50_000)
                waited += 0.05
            }
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

        func logTail() -> String {
            String(((try? String(contentsOf: log, encoding: .utf8)) ?? "").suffix(400)).trimmingCharacters(in: .whitespacesAndNewlines)
        }

        /// SIGTERM to the child (nbdkit, same PID after exec), then wait; SIGKILL if it lingers.
        func stop() {
            guard !stopped else { return }
            stopped = true
            guard process.isRunning else { return }
            kill(process.processIdentifier, SIGTERM)
            for _ in 0..<100 where process.isRunning { usleep(50_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
    }

    static func startServer(pluginPath: String, socket: String, work: URL, options: Options) throws -> Server {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: options.bootlabExecutable)
        var args = ["serve", pluginPath, "--raw", "--socket", socket]
        if let v = options.access.vault { args += ["--vault", v] }
        if options.access.allowOutside { args.append("--allow-outside") }
        var env = ProcessInfo.processInfo.environment
        // The passphrase reaches the child through its environment, never its argv.
        if let source = options.access.passphrase {
            env[PassphraseSource.defaultEnvironmentVariable] = String(decoding: try source.resolve(), as: UTF8.self)
        }
        p.environment = env
        p.arguments = args
        let log = work.appendingPathComponent("serve.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: log)
        p.standardError = try FileHandle(forWritingTo: log)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        return Server(process: p, socket: socket, log: log)
    }
}
