import BlockCore
#if canImport(Glibc)
import Glibc
#endif

/// The storage the filler writes to: a file whose writes become durable only at `sync()`.
///
/// The replacement file and its progress journal go through this protocol so a test can stand
/// in a file that *drops every write not yet synced* (a simulated power cut) and check that the
/// next start never serves a range as filled that is not (`Tests/ExposureTests/ReplacementPowerCutTests`).
public protocol DurableFile: AnyObject, Sendable {
    var path: String { get }
    /// Reads `buffer.count` bytes; bytes past the end of the file read as zeros.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws
    /// Makes `[offset, offset+count)` read as zeros (a hole where the file system allows).
    func zero(at offset: UInt64, count: UInt64) throws
    func size() throws -> UInt64
    func truncate(to size: UInt64) throws
    /// Everything written so far is durable when this returns.
    func sync() throws
}

extension DurableFile {
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(at: offset, into: $0) }
        return out
    }

    public func write(at offset: UInt64, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write(at: offset, from: $0) }
    }
}

/// A `DurableFile` over a POSIX descriptor (pread/pwrite, fallocate hole punching, fdatasync).
public final class PosixDurableFile: DurableFile, @unchecked Sendable {
    // @unchecked: the descriptor is immutable; pread/pwrite are thread-safe.
    public let path: String
    let fd: Int32

    /// Opens `path` read-write (`create`: created if missing; `readOnly`: O_RDONLY).
    public init(path: String, create: Bool = false, readOnly: Bool = false) throws {
        self.path = path
        let flags = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC | (create ? O_CREAT : 0)
        let fd = open(path, flags, 0o644)
        guard fd >= 0 else { throw IOError("open", path: path, errno: errno) }
        self.fd = fd
    }

    deinit { close(fd) }

    /// `SEEK_DATA` (Linux, glibc declares it only under _GNU_SOURCE).
    static let seekData: Int32 = 3

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 { if errno == EINTR { continue }; throw IOError("read", path: path, errno: errno) }
            if n == 0 {
                memset(buffer.baseAddress! + done, 0, buffer.count - done)
                return
            }
            done += n
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 { if errno == EINTR { continue }; throw IOError("write", path: path, errno: errno) }
            done += n
        }
    }

    public func zero(at offset: UInt64, count: UInt64) throws {
        guard count > 0 else { return }
        // Already a hole (a fresh replacement, or a range never written): nothing to read or
        // write. SEEK_DATA finds the next byte that is not a hole; none before the end: done.
        let nextData = lseek(fd, off_t(offset), PosixDurableFile.seekData)
        if nextData < 0 && errno == ENXIO { return }
        if nextData >= 0 && UInt64(nextData) >= offset + count { return }
        // A hole stays a hole: only bytes that are not already zero are overwritten (after a
        // crash or an invalidated chunk); a fresh sparse replacement is never written here.
        var buf = [UInt8](repeating: 0, count: Int(min(count, 1 << 20)))
        var off = offset
        while off < offset + count {
            let n = Int(min(UInt64(buf.count), offset + count - off))
            try buf.withUnsafeMutableBytes { try read(at: off, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n])) }
            if !buf.withUnsafeBytes({ isAllZero(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }) {
                let zeros = [UInt8](repeating: 0, count: n)
                try zeros.withUnsafeBytes { try write(at: off, from: $0) }
            }
            off += UInt64(n)
        }
    }

    public func size() throws -> UInt64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw IOError("stat", path: path, errno: errno) }
        return UInt64(st.st_size)
    }

    public func truncate(to size: UInt64) throws {
        guard ftruncate(fd, off_t(size)) == 0 else { throw IOError("truncate", path: path, errno: errno) }
    }

    public func sync() throws {
        guard fdatasync(fd) == 0 else { throw IOError("fdatasync", path: path, errno: errno) }
    }

    /// Takes an exclusive advisory lock without waiting; false when another process holds it.
    func tryLockExclusive() -> Bool { flock(fd, LOCK_EX | LOCK_NB) == 0 }

    /// `tryLockExclusive`, retried for up to `seconds`: a fill that just returned may still be
    /// held for a moment by its last worker thread's reference (the lock goes with the journal's
    /// descriptor), which a unit-test run saw as "busy" once; another process really filling
    /// holds it far longer and is still refused.
    func lockExclusive(waitingUpTo seconds: Double) -> Bool {
        let tries = max(1, Int(seconds / 0.02))
        for i in 0..<tries {
            if tryLockExclusive() { return true }
            if i + 1 < tries { usleep(20_000) }
        }
        return false
    }
    func unlock() { _ = flock(fd, LOCK_UN) }
}

/// fsyncs the directory holding `path` (a rename or link in it becomes durable).
func syncParentDirectory(of path: String) {
    let dir = PluginFile.directory(of: PluginFile.absolutePath(path))
    let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if fd >= 0 { _ = fsync(fd); close(fd) }
}

/// Whether another process holds the materialization lock of the journal at `path`.
func isLockedByOther(path: String) -> Bool {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    if flock(fd, LOCK_SH | LOCK_NB) == 0 {
        _ = flock(fd, LOCK_UN)
        return false
    }
    return errno == EWOULDBLOCK
}
