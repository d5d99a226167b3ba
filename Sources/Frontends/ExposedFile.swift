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

/// Errors a front-end reports for an exposed file.
public enum FrontendError: Error, CustomStringConvertible {
    case sizeChanged(name: String, announced: UInt64, opened: UInt64)
    case notWritable(String)
    case usage(String)

    public var description: String {
        switch self {
        case let .sizeChanged(name, announced, opened):
            return "\(name): announced \(announced) bytes but the opened source has \(opened)"
        case let .notWritable(name):
            return "\(name): the opened source takes no writes"
        case let .usage(why):
            return why
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
