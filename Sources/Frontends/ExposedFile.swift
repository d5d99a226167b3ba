import BlockCore
import Exposure

/// A file a front-end shows whose bytes come from a block source.
///
/// The size is known up front (from the plugin file alone) and the source is opened only when a
/// client opens the file for I/O: `stat`, `ls -l` and `qemu-img info`'s stat never open the backup
/// (deferred open). When `writable`, `open` must return a `WritableBlockSource` (normally a
/// `WriteOverlay` over the read-only source). When `maxSize` is set (and `writable`), the file may
/// grow up to it — truncate/ftruncate and writes past the end — and `open` must return a
/// `ResizableBlockSource`; otherwise its size is fixed like a block device's.
public struct ExposedFile: Sendable {
    /// The size announced before the source opens (for a grown overlay: the size its journal records).
    public var size: UInt64
    public var writable: Bool
    /// The growth limit, or nil for a fixed-size file.
    public var maxSize: UInt64?
    public var open: @Sendable () throws -> any BlockSource
    /// A file whose bytes are this file's bytes at the same offsets with nothing in between (a
    /// read-only raw image: no overlay, no faults), which a front-end may let the kernel read
    /// itself (FUSE passthrough) without opening the source; nil otherwise.
    public var kernelReadable: KernelReadableFile?

    public init(size: UInt64, writable: Bool = false, maxSize: UInt64? = nil,
                open: @escaping @Sendable () throws -> any BlockSource) {
        self.size = size
        self.writable = writable
        self.maxSize = maxSize
        self.open = open
    }

    /// Whether writers may change the file's size.
    public var resizable: Bool { writable && maxSize != nil }

    /// An already-open source (tests, cheap computed sources).
    public init(source: any BlockSource) {
        self.init(size: source.size, writable: source is any WritableBlockSource, open: { source })
    }
}

/// See `ExposedFile.kernelReadable`.
public struct KernelReadableFile: Sendable {
    public var path: String
    /// Where opens served this way are counted (`passthroughOpens` in `--stats`).
    public var counters: SourceCounters?
    public init(path: String, counters: SourceCounters? = nil) {
        self.path = path
        self.counters = counters
    }
}

/// Errors a front-end reports for an exposed file.
public enum FrontendError: Error, CustomStringConvertible {
    case sizeChanged(name: String, announced: UInt64, opened: UInt64)
    case notWritable(String)
    /// The nbdkit plugin library is in none of the places searched (each a path and why).
    case pluginLibraryMissing(searched: [String])
    /// Something other than a socket sits at the socket path (it is never replaced).
    case notASocket(path: String)
    /// A Unix socket path longer than `sockaddr_un` holds.
    case socketPathTooLong(path: String, bytes: Int, limit: Int)
    /// libfuse could not mount (its own message was printed before).
    case mountRefused(mountpoint: String)
    case fuseFailed(mountpoint: String, status: Int32)
    /// nbdkit called in before its configuration completed.
    case notConfigured
    /// A `--tcp HOST:PORT` that does not parse or resolve.
    case badEndpoint(String, reason: String)
    /// TLS set-up for a network export: missing key material, or TCP without TLS or `--insecure`.
    case tls(String)

    public var description: String {
        switch self {
        case let .sizeChanged(name, announced, opened):
            return "\(name): announced \(announced) bytes but the opened source has \(opened)"
        case let .notWritable(name):
            return "\(name): the opened source takes no writes"
        case let .pluginLibraryMissing(searched):
            return "nbdkit plugin not found; searched, in order:\n" + searched.map { "  - \($0)" }.joined(separator: "\n")
                + "\n(in a checkout: `swift build --product bootlab-nbdkit`; installed: reinstall the bootlab package; or set BOOTLAB_NBDKIT_PLUGIN)"
        case let .notASocket(path): return "\(path) exists and is not a socket"
        case let .socketPathTooLong(path, bytes, limit): return "socket path too long (\(bytes) bytes, at most \(limit)): \(path)"
        case let .mountRefused(mountpoint): return "cannot mount \(mountpoint) (see the message above; is /dev/fuse usable?)"
        case let .fuseFailed(mountpoint, status): return "FUSE on \(mountpoint) failed (status \(status), see the message above)"
        case .notConfigured: return "not configured (file=PATH is required)"
        case let .badEndpoint(text, reason): return "--tcp \(text): \(reason)"
        case let .tls(reason): return "TLS: \(reason)"
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// errno for a thrown error, for front-ends that speak errno (FUSE, nbdkit).
func errnoCode(for error: any Error) -> Int32 {
    switch error {
    case let e as IOError: return e.errno
    case BlockSourceError.readOnly: return EROFS
    case BlockSourceError.outOfRange: return EINVAL
    case FrontendError.notWritable: return EROFS
    case ResizeError.beyondLimit: return EFBIG
    case ResizeError.belowMinimum: return EPERM
    default: return EIO
    }
}
