import BlockCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The slow path users compare against: every byte of a backup written to a raw file.
public enum BackupRestore {
    /// Writes `reader`'s bytes to a new file at `path` (refuses to overwrite), leaving zero and
    /// absent ranges as holes.
    public static func restore(_ reader: some BlockSource, to path: String, progress: Bool = false) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            if errno == EEXIST { throw BackupImageError.outputExists(path) }
            throw IOError("create", path: path, errno: errno)
        }
        defer { close(fd) }
        guard ftruncate(fd, off_t(reader.size)) == 0 else { throw IOError("truncate", path: path, errno: errno) }
        let bar = ProgressBar(total: reader.size, label: "restore", enabled: progress)
        let chunk = 4 << 20
        var buf = [UInt8](repeating: 0, count: chunk)
        for e in try reader.allExtents() {
            if e.kind.readsAsZero { bar.advance(by: e.length); continue }
            var off = e.offset
            while off < e.end {
                let n = Int(min(UInt64(chunk), e.end - off))
                try buf.withUnsafeMutableBytes { try reader.read(at: off, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n])) }
                var done = 0
                while done < n {
                    let w = buf.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, n - done, off_t(off) + off_t(done)) }
                    if w < 0 { if errno == EINTR { continue }; throw IOError("write", path: path, errno: errno) }
                    done += w
                }
                bar.advance(by: UInt64(n))
                off += UInt64(n)
            }
        }
        guard fsync(fd) == 0 else { throw IOError("fsync", path: path, errno: errno) }
        bar.finish()
    }
}
