import BlockCore
import CFuse3
import Exposure
import Foundation
import Processes
#if canImport(Glibc)
import Glibc
#endif

/// The block position of the filter: nbdkit, running BootLab's plugin (`libbootlab-nbdkit.so`),
/// serving one source over a Unix socket. nbdkit brings the protocol (fixed newstyle, structured
/// replies, block status, multi-conn, TLS); the plugin only answers from a `BlockSource`.
public struct NBDServe: Sendable {
    public var spec: SourceSpec
    public var socketPath: String
    /// JSON statistics destination: a path, "-" for standard error, nil for none.
    public var stats: String?
    /// The plugin library; default: `NBDServe.locatePlugin()`.
    public var pluginPath: String?
    /// Extra arguments for nbdkit itself (e.g. `--tls=require --tls-certificates=DIR`).
    public var nbdkitArguments: [String] = []
    public var verbose = false
    /// Listen on TCP instead of `socketPath` (which is then unused); see `TCPEndpoint`.
    public var tcp: TCPEndpoint?
    /// Extra `key=value` parameters for BootLab's plugin (passphrase-file, vault, allow-outside).
    /// `spec` maps to file=, raw=, overlay= and inject-fault= itself.
    public var pluginParameters: [String] = []
    /// Filter mode: nbdkit runs the plugin file's own source plugin (`words`: PLUGIN ARG…, as
    /// `ExternalSource.nbdkitPluginWords` gives them) in `directory`, with BootLab's library as a
    /// filter on top (`--filter=`; its parameters prefixed `bootlab-`). One process: the filter
    /// reads the source through nbdkit's next->pread, not over a second NBD connection.
    public struct FilterMode: Sendable, Equatable {
        public var words: [String]
        public var directory: String
        public init(words: [String], directory: String) {
            self.words = words
            self.directory = directory
        }
    }
    public var filter: FilterMode?
    /// The prefix of BootLab's parameters in filter mode (they share nbdkit's command line with
    /// the source plugin's own).
    public static let filterParameterPrefix = "bootlab-"

    public init(spec: SourceSpec, socketPath: String, stats: String? = nil, pluginPath: String? = nil) {
        self.spec = spec
        self.socketPath = socketPath
        self.stats = stats
        self.pluginPath = pluginPath
    }

    /// The plugin's file name where nbdkit finds plugins by name (`nbdkit bootlab …`).
    public static let installedPluginName = "nbdkit-bootlab-plugin.so"

    /// `$BOOTLAB_NBDKIT_PLUGIN`, else `libbootlab-nbdkit.so` beside the running executable (SwiftPM
    /// puts both in the same build directory), else the installed plugin: in
    /// `<prefix>/lib/<multiarch>/nbdkit/plugins/` of this bootlab's install prefix, then in nbdkit's
    /// own `plugindir` (`nbdkit --dump-config`). Throws naming every place searched.
    public static func locatePlugin(environment: [String: String] = ProcessInfo.processInfo.environment,
                                    executable: String = DataFiles.executablePath()) throws -> String {
        if let env = environment["BOOTLAB_NBDKIT_PLUGIN"], !env.isEmpty {
            guard FileManager.default.fileExists(atPath: env) else {
                throw FrontendError.pluginLibraryMissing(searched: [env + " (from $BOOTLAB_NBDKIT_PLUGIN)"])
            }
            return env
        }
        var searched = ["$BOOTLAB_NBDKIT_PLUGIN (not set)"]
        var candidates = [(URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("libbootlab-nbdkit.so").path,
                           "beside the executable")]
        candidates.append((DataFiles.prefix(forExecutable: executable)
            .appendingPathComponent("lib/\(multiarchTriplet)/nbdkit/plugins/\(installedPluginName)").path, "the install prefix"))
        for (path, why) in candidates {
            if FileManager.default.fileExists(atPath: path) { return path }
            searched.append("\(path) (\(why))")
        }
        switch nbdkitPluginDirectory() {
        case .success(let dir):
            let path = dir + "/" + installedPluginName
            if FileManager.default.fileExists(atPath: path) { return path }
            searched.append("\(path) (nbdkit's plugindir)")
        case .failure(let reason):
            searched.append("nbdkit's plugindir (unknown: \(reason))")
        }
        throw FrontendError.pluginLibraryMissing(searched: searched)
    }

    /// Debian's multiarch directory name for this machine.
    static var multiarchTriplet: String {
        #if arch(x86_64)
        return "x86_64-linux-gnu"
        #elseif arch(arm64)
        return "aarch64-linux-gnu"
        #else
        return "unknown-linux-gnu"
        #endif
    }

    struct PluginDirectoryUnknown: Error, CustomStringConvertible { var description: String }

    /// nbdkit's `plugindir=` line of `nbdkit --dump-config`.
    static func nbdkitPluginDirectory() -> Result<String, PluginDirectoryUnknown> {
        let done: Completed
        do { done = try Command(["nbdkit", "--dump-config"], stdout: .capture, stderr: .capture).run(timeout: 10) } catch {
            return .failure(PluginDirectoryUnknown(description: "\(error)"))
        }
        for line in done.stdoutText.split(separator: "\n") where line.hasPrefix("plugindir=") {
            return .success(String(line.dropFirst("plugindir=".count)))
        }
        return .failure(PluginDirectoryUnknown(description: "nbdkit --dump-config printed no plugindir="))
    }

    /// Whether this machine's nbdkit loads BootLab's library as a filter. nbdkit keeps a stable
    /// ABI for plugins but not for filters: a filter must be built against the very nbdkit version
    /// that loads it (`_version`), so an nbdkit updated after bootlab was built refuses it. Nil
    /// when it loads; otherwise what nbdkit said.
    public static func filterLoadFailure(library: String) -> String? {
        do {
            let done = try Command(["nbdkit", "--filter=" + library, "null", "--help"], stdout: .capture, stderr: .capture).run(timeout: 20, check: false)
            if !done.timedOut, done.termination.succeeded, done.stdoutText.contains("filter: bootlab") { return nil }
            return (done.stderrText + done.stdoutText).split(separator: "\n").suffix(2).joined(separator: " | ")
        } catch {
            return "\(error)"
        }
    }

    /// nbdkit's command line (argv[0] first).
    public func arguments() throws -> [String] {
        let plugin = try pluginPath ?? NBDServe.locatePlugin()
        // The socket arrives by socket activation (see `exec`), so no --unix here.
        var args = ["nbdkit", "--foreground"]
        if spec.overlayPath == nil { args.append("--readonly") }
        if verbose { args.append("--verbose") }
        args += nbdkitArguments
        var ours = ["file=" + absolute(spec.path)]
        if spec.raw { ours.append("raw=true") }
        if let o = spec.overlayPath { ours.append("overlay=" + absolute(o)) }
        if let s = stats { ours.append("stats=" + (s == "-" ? s : absolute(s))) }
        if !spec.faults.isEmpty { ours.append("\(FaultPlan.optionName)=\(spec.faults)") }
        ours += pluginParameters
        if let filter {
            // nbdkit [options] --filter=OURS PLUGIN ARG… bootlab-KEY=VALUE…
            return args + ["--filter=" + absolute(plugin)] + filter.words + ours.map { NBDServe.filterParameterPrefix + $0 }
        }
        return args + [plugin] + ours
    }

    /// Replaces this process with nbdkit (same PID: signals and `kill -9` reach the server
    /// directly). The listening socket is made here, mode 0600, and handed over by systemd-style
    /// socket activation (LISTEN_PID/LISTEN_FDS, fd 3): nbdkit's own `--unix` socket follows no
    /// umask we can set (it comes out 0755). A stale socket at the path is replaced.
    public func exec() throws -> Never {
        let args = try arguments()
        let fd: Int32
        if let tcp {
            let bound = try tcp.listen()
            fd = bound.fd
            // The port actually bound (the one chosen when asked for port 0), for whoever started us.
            var shown = tcp
            shown.port = bound.port
            FileHandle.standardError.write(Data("bootlab serve: listening on \(shown)\n".utf8))
        } else {
            fd = try NBDServe.listen(at: socketPath)
        }
        if fd != 3 {
            guard dup2(fd, 3) == 3 else { throw IOError("dup2", path: socketPath, errno: errno) }
            close(fd)
        }
        _ = fcntl(3, F_SETFD, 0) // keep it across exec
        setenv("LISTEN_PID", String(getpid()), 1)
        setenv("LISTEN_FDS", "1", 1)
        unsetenv("LISTEN_FDNAMES")
        // nbdkit stops on SIGINT/SIGTERM only if they reach it (exec keeps ignored dispositions).
        bl_reset_server_signals()
        // Filter mode: the source plugin runs where the plugin file lies (its relative paths).
        if let filter, chdir(filter.directory) != 0 { throw IOError("chdir", path: filter.directory, errno: errno) }
        let cargs = args.map { strdup($0) } + [nil]
        execvp("nbdkit", cargs)
        throw IOError("exec", path: "nbdkit", errno: errno)
    }

    /// A listening Unix socket at `path`, mode 0600.
    public static func listen(at path: String) throws -> Int32 {
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else { throw FrontendError.notASocket(path: path) }
            unlink(path)
        }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw FrontendError.socketPathTooLong(path: path, bytes: bytes.count, limit: MemoryLayout.size(ofValue: addr.sun_path) - 1)
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            p.copyBytes(from: bytes)
            p[bytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw IOError("socket", path: path, errno: errno) }
        // The mode is set at bind time (umask) so the socket is never reachable by others.
        let old = umask(0o177)
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        let e = errno
        umask(old)
        guard r == 0 else { close(fd); throw IOError("bind", path: path, errno: e) }
        guard chmod(path, 0o600) == 0, Glibc.listen(fd, 128) == 0 else {
            let e = errno; close(fd); throw IOError("listen", path: path, errno: e)
        }
        return fd
    }

    private func absolute(_ p: String) -> String { absolutePath(p) }
}
