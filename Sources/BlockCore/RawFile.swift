#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file (or block device) as a block source: `pread`, and an extent map from
/// `SEEK_DATA`/`SEEK_HOLE` so sparse files stay sparse through every layer.
///
/// Opened read-only unless `writable` is asked for; a backup is only ever opened read-only.
// Linux values; Glibc does not export them without _GNU_SOURCE.
private let seekData: Int32 = 3
private let seekHole: Int32 = 4

public final class RawFile: WritableBlockSource, @unchecked Sendable {
    // @unchecked: the descriptor is immutable after init and pread/pwrite are thread-safe.
    public let path: String
    public let fd: Int32
    public let isWritable: Bool
    private let _size: UInt64
    private let growable: Bool
    private let sizeLock = NSLockish()
    private var currentSize: UInt64

    public var size: UInt64 { growable ? sizeLock.withLock { currentSize } : _size }

    /// Opens an existing file or block device.
    public init(path: String, writable: Bool = false) throws {
        let fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)
        guard fd >= 0 else { throw IOError("open", path: path, errno: errno) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            close(fd)
            throw IOError("stat", path: path, errno: e)
        }
        var size = UInt64(st.st_size)
        if (st.st_mode & S_IFMT) == S_IFBLK {
            // Block devices report st_size 0; ask the device.
            let end = lseek(fd, 0, SEEK_END)
            if end > 0 { size = UInt64(end) }
        }
        self.path = path
        self.fd = fd
        self.isWritable = writable
        self._size = size
        self.currentSize = size
        self.growable = writable
    }

    /// Creates (or truncates) a file of `size` bytes, sparse.
    public static func create(path: String, size: UInt64, mode: mode_t = 0o644) throws -> RawFile {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw IOError("create", path: path, errno: errno) }
        defer { close(fd) }
        guard ftruncate(fd, off_t(size)) == 0 else { throw IOError("truncate", path: path, errno: errno) }
        return try RawFile(path: path, writable: true)
    }

    deinit { close(fd) }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        try preadFully(at: offset, into: buffer)
    }

    /// pread until `buffer` is full; bytes past the end of the file read as zeros.
    public func preadFully(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw IOError("read", path: path, errno: errno)
            }
            if n == 0 {
                // Past EOF (a file that shrank, or a reader that allows it): zeros.
                (buffer.baseAddress! + done).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - done)
                return
            }
            done += n
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        guard isWritable else { throw BlockSourceError.readOnly(path) }
        try Self.writeFully(fd, buffer, at: offset, path: path)
        let end = offset + UInt64(buffer.count)
        sizeLock.withLock { if end > currentSize { currentSize = end } }
    }

    /// pwrite(2) until every byte of `buffer` is at `offset` of `fd` (short writes continued,
    /// EINTR retried); `path` names the file in the error. The one write loop of the project.
    public static func writeFully(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: UInt64, path: String) throws {
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw IOError("write", path: path, errno: errno)
            }
            done += n
        }
    }

    public func write(at offset: UInt64, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write(at: offset, from: $0) }
    }

    public func truncate(to newSize: UInt64) throws {
        guard isWritable else { throw BlockSourceError.readOnly(path) }
        guard ftruncate(fd, off_t(newSize)) == 0 else { throw IOError("truncate", path: path, errno: errno) }
        sizeLock.withLock { currentSize = newSize }
    }

    public func flush() throws {
        guard isWritable else { return }
        guard fsync(fd) == 0 else { throw IOError("fsync", path: path, errno: errno) }
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out: [Extent] = []
        var pos = r.lowerBound
        while pos < r.upperBound {
            let data = lseek(fd, off_t(pos), seekData)
            if data < 0 {
                if errno == ENXIO { out.append(Extent(offset: pos, length: r.upperBound - pos, kind: .absent)); break }
                // File system without hole support: all data.
                out.append(Extent(offset: pos, length: r.upperBound - pos, kind: .data))
                break
            }
            let dataStart = min(UInt64(data), r.upperBound)
            if dataStart > pos { out.append(Extent(offset: pos, length: dataStart - pos, kind: .absent)) }
            if dataStart >= r.upperBound { break }
            let hole = lseek(fd, off_t(dataStart), seekHole)
            let dataEnd = hole < 0 ? r.upperBound : min(UInt64(hole), r.upperBound)
            out.append(Extent(offset: dataStart, length: dataEnd - dataStart, kind: .data))
            pos = dataEnd
        }
        return coalesce(out)
    }
}
