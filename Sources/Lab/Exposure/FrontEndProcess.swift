import BlockCore
import Foundation
import Processes

/// A running filter front-end serving a cell's plugin files: one `bootlab mount` (FUSE) for the
/// whole plugin directory, or one `bootlab serve` (NBD over a Unix socket) per machine. Child
/// processes, so the lab reads the exposed disks exactly as a hypervisor would.
public final class FrontEndProcess: @unchecked Sendable {
    // @unchecked: fields are set before the value is shared; `copies` is behind a lock.
    public let kind: BackupSpec.FrontEnd
    /// Child processes with the stats file each writes on SIGUSR1.
    public let children: [(process: ChildProcess, statsFile: String)]
    /// FUSE: the mountpoint; NBD: nil.
    public let mountpoint: String?
    /// NBD: the socket per machine.
    public let sockets: [String: String]
    /// The native format of the exposed files (the target's).
    public let format: LabDiskFormat
    private let copies = Locked<[String: String]>([:])
    private let scratch: URL

    init(kind: BackupSpec.FrontEnd, children: [(ChildProcess, String)], mountpoint: String?, sockets: [String: String],
         format: LabDiskFormat, scratch: URL) {
        self.kind = kind
        self.format = format
        self.children = children.map { (process: $0.0, statsFile: $0.1) }
        self.mountpoint = mountpoint
        self.sockets = sockets
        self.scratch = scratch
    }

    /// Starts the front-end for `plugins` (machine → plugin path, all in `pluginDirectory`) and
    /// registers its shutdown with the context. `extraArguments` go to every child (passphrase,
    /// vault, `--writable`, `--inject-fault`).
    public static func start(_ kind: BackupSpec.FrontEnd, plugins: [String: String], pluginDirectory: URL,
                             extraArguments: [String], format: LabDiskFormat, label: String,
                             in context: CellContext) throws -> FrontEndProcess {
        let exe = try BootLabExecutable.path()
        func launch(_ args: [String], log: URL) throws -> ChildProcess {
            // stderr follows stdout: one descriptor, so the two streams append in order to one log.
            try Command([exe] + args, stdout: .file(log.path, append: false), stderr: .stdout).spawn()
        }
        let dir = context.directory
        switch kind {
        case .fuse:
            let mnt = dir.appendingPathComponent(label)
            try FileManager.default.createDirectory(at: mnt, withIntermediateDirectories: true)
            let stats = dir.appendingPathComponent("\(label)-stats.json").path
            let log = dir.appendingPathComponent("\(label).log")
            let p = try launch(["mount", pluginDirectory.path, mnt.path, "--stats-file", stats] + extraArguments, log: log)
            let fe = FrontEndProcess(kind: kind, children: [(p, stats)], mountpoint: mnt.path, sockets: [:], format: format, scratch: dir.appendingPathComponent(label + "-copies"))
            context.addCleanup { fe.stop() }
            try waitUntil(what: "bootlab mount", process: p, log: log) { isMounted(mnt.path) }
            return fe
        case .nbd:
            var children: [(ChildProcess, String)] = []
            var sockets: [String: String] = [:]
            // Socket paths are limited to ~107 bytes: keep them short, under /tmp.
            let sockDir = URL(fileURLWithPath: "/tmp/bootlab-nbd-\(getpid())-\(Digest.string(dir.path).prefix(10))-\(label)")
            try? FileManager.default.removeItem(at: sockDir)
            try FileManager.default.createDirectory(at: sockDir, withIntermediateDirectories: true)
            for (machine, plugin) in plugins.sorted(by: { $0.key < $1.key }) {
                let sock = sockDir.appendingPathComponent("\(machine).sock").path
                let stats = dir.appendingPathComponent("\(label)-\(machine)-stats.json").path
                let log = dir.appendingPathComponent("\(label)-\(machine).log")
                let p = try launch(["serve", plugin, "--socket", sock, "--stats-file", stats] + extraArguments, log: log)
                children.append((p, stats))
                sockets[machine] = sock
                context.addCleanup { p.terminate() }
                try waitUntil(what: "bootlab serve", process: p, log: log) { FileManager.default.fileExists(atPath: sock) }
            }
            context.addCleanup { try? FileManager.default.removeItem(at: sockDir) }
            return FrontEndProcess(kind: kind, children: children, mountpoint: nil, sockets: sockets, format: format, scratch: dir.appendingPathComponent(label + "-copies"))
        }
    }

    public func stop() {
        if let mnt = mountpoint { _ = try? Shell.run("fusermount3", ["-u", mnt], check: false) }
        for c in children { c.process.terminate() }
    }

    /// The exposed disk as QEMU's `-drive` sees it.
    public func diskReference(machine: String) -> DiskReference {
        switch kind {
        case .fuse: return .file(path: exposedPath(machine: machine), format: format.qemuDriver)
        case .nbd: return .driveOptions("driver=\(format.qemuDriver),file.driver=nbd,file.server.type=unix,file.server.path=\(sockets[machine] ?? "")")
        }
    }

    /// The exposed disk as `qemu-img --image-opts` / `qemu-io --image-opts` take it.
    public func imageOptions(machine: String) -> String {
        switch kind {
        case .fuse: return "driver=\(format.qemuDriver),file.driver=file,file.filename=\(exposedPath(machine: machine).replacingOccurrences(of: ",", with: ",,"))"
        case .nbd: return "driver=\(format.qemuDriver),file.driver=nbd,file.server.type=unix,file.server.path=\(sockets[machine] ?? "")"
        }
    }

    /// The exposed file's own bytes through QEMU's raw driver (nothing probed, nothing parsed).
    public func rawFileOptions(machine: String) -> String {
        switch kind {
        case .fuse: return "driver=raw,file.driver=file,file.filename=\(exposedPath(machine: machine).replacingOccurrences(of: ",", with: ",,"))"
        case .nbd: return "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=\(sockets[machine] ?? "")"
        }
    }

    /// FUSE: the exposed file on the mount.
    public func exposedPath(machine: String) -> String {
        URL(fileURLWithPath: mountpoint ?? "/nonexistent").appendingPathComponent(format.fileName(machine: machine)).path
    }

    /// A local file holding the exposed VHDX's bytes, for tools that only open files (libvhdi,
    /// `bootlab check`): the FUSE file itself, or (NBD) a sparse copy fetched once over NBD.
    public func localFile(machine: String) throws -> String {
        if kind == .fuse { return exposedPath(machine: machine) }
        if let p = copies.withLock({ $0[machine] }) { return p }
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        let out = scratch.appendingPathComponent(format.fileName(machine: machine)).path
        try? FileManager.default.removeItem(atPath: out)
        // The export is the native file's bytes: copy them as raw bytes, holes kept sparse.
        try Shell.run("qemu-img", ["convert", "-f", "raw", "-O", "raw",
                                   "nbd+unix:///?socket=\(sockets[machine] ?? "")", out])
        copies.withLock { $0[machine] = out }
        return out
    }

    /// Asks every child for its counters (SIGUSR1) and returns the sources they report.
    public func statistics() throws -> [SourceStatistics] {
        var out: [SourceStatistics] = []
        for c in children {
            try? FileManager.default.removeItem(atPath: c.statsFile)
            guard c.process.isRunning else { throw LabError.tool("front-end (pid \(c.process.pid))", reason: "is not running") }
            c.process.signal(SIGUSR1)
            var waited = 0.0
            while !FileManager.default.fileExists(atPath: c.statsFile) {
                guard waited < 10 else { throw LabError.tool("front-end (pid \(c.process.pid))", reason: "no statistics in \(c.statsFile) 10 s after SIGUSR1") }
                usleep(20_000)
                waited += 0.02
            }
            struct Document: Decodable { var sources: [SourceStatistics] }
            out += try JSONDecoder().decode(Document.self, from: Data(contentsOf: URL(fileURLWithPath: c.statsFile))).sources
        }
        return out
    }

    /// Checks `ready` every 50 ms for up to 20 s; between checks it waits on the child itself,
    /// so a child that exits is reported at once rather than at the deadline.
    static func waitUntil(what: String, process: ChildProcess, log: URL, _ ready: () -> Bool) throws {
        var waited = 0.0
        while !ready() {
            guard waited < 20, process.wait(timeout: 0.05) == nil else {
                let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                throw LabError.tool(what, reason: "did not come up: \(text.suffix(300))")
            }
            waited += 0.05
        }
    }

    static func isMounted(_ path: String) -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
        return text.split(separator: "\n").contains { line in
            let f = line.split(separator: " ")
            return f.count > 4 && f[4] == path
        }
    }
}
