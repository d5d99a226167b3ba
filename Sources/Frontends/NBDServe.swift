import BlockCore
import Foundation
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

    public init(spec: SourceSpec, socketPath: String, stats: String? = nil, pluginPath: String? = nil) {
        self.spec = spec
        self.socketPath = socketPath
        self.stats = stats
        self.pluginPath = pluginPath
    }

    /// `$BOOTLAB_NBDKIT_PLUGIN`, else `libbootlab-nbdkit.so` beside the running executable
    /// (SwiftPM puts both in the same build directory).
    public static func locatePlugin() throws -> String {
        if let env = ProcessInfo.processInfo.environment["BOOTLAB_NBDKIT_PLUGIN"], !env.isEmpty { return env }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let candidate = URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("libbootlab-nbdkit.so").path
        guard FileManager.default.fileExists(atPath: candidate) else {
            throw FrontendError.usage("nbdkit plugin not found at \(candidate) (build it with `swift build --product bootlab-nbdkit`, or set BOOTLAB_NBDKIT_PLUGIN)")
        }
        return candidate
    }

    /// nbdkit's command line (argv[0] first).
    public func arguments() throws -> [String] {
        let plugin = try pluginPath ?? NBDServe.locatePlugin()
        var args = ["nbdkit", "--foreground", "--unix", socketPath]
        if spec.overlayPath == nil { args.append("--readonly") }
        if verbose { args.append("--verbose") }
        args += nbdkitArguments
        args += [plugin, "file=" + absolute(spec.path)]
        if spec.raw { args.append("raw=true") }
        if let o = spec.overlayPath { args.append("overlay=" + absolute(o)) }
        if let s = stats { args.append("stats=" + (s == "-" ? s : absolute(s))) }
        return args
    }

    /// Replaces this process with nbdkit (same PID: signals and `kill -9` reach the server
    /// directly). The socket is created 0600 (umask), a stale socket at the path is removed.
    public func exec() throws -> Never {
        let args = try arguments()
        var st = stat()
        if lstat(socketPath, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else { throw FrontendError.usage("\(socketPath) exists and is not a socket") }
            unlink(socketPath)
        }
        umask(0o177)
        let cargs = args.map { strdup($0) } + [nil]
        execvp("nbdkit", cargs)
        throw IOError("exec", path: "nbdkit", errno: errno)
    }

    private func absolute(_ p: String) -> String { absolutePath(p) }
}
