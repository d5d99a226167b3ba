import BlockCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The slow path users compare against: every byte of a backup written to a raw file.
public enum BackupRestore {
    /// Writes `reader`'s bytes to a new file at `path` (refuses to overwrite), leaving zero and
    /// absent ranges as holes, then fsyncs it. A backup image is decoded block by block on
    /// `threads` workers (see `BackupImageReader.forEachStoredBlock`); any other source is copied
    /// through `read(at:into:)`.
    public static func restore(_ reader: some BlockSource, to path: String, progress: Bool = false,
                               threads: Int = BackupImageReader.defaultDecodeThreads) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            if errno == EEXIST { throw BackupImageError.outputExists(path) }
            throw IOError("create", path: path, errno: errno)
        }
        defer { close(fd) }
        guard ftruncate(fd, off_t(reader.size)) == 0 else { throw IOError("truncate", path: path, errno: errno) }
        let bar = ProgressBar(total: reader.size, label: "restore", enabled: progress)
        if let image = reader as? BackupImageReader {
            try restoreBlocks(image, fd: fd, path: path, bar: bar, threads: threads)
        } else {
            try copyExtents(reader, fd: fd, path: path, bar: bar)
        }
        guard fsync(fd) == 0 else { throw IOError("fsync", path: path, errno: errno) }
        bar.finish()
    }

    /// Each worker writes the blocks it decoded at their own offsets, so no ordering between
    /// workers is needed. Blocks whose plaintext is all zeros stay holes, like zero-marked ones.
    private static func restoreBlocks(_ image: BackupImageReader, fd: Int32, path: String, bar: ProgressBar, threads: Int) throws {
        var stored: UInt64 = 0
        for e in try image.allExtents() where e.kind == .data { stored += e.length }
        bar.advance(by: image.size - stored)
        try image.forEachStoredBlock(threads: threads) { offset, plain in
            if !isAllZero(plain) { try RawFile.writeFully(fd, plain, at: offset, path: path) }
            bar.advance(by: UInt64(plain.count))
        }
    }

    private static func copyExtents(_ reader: some BlockSource, fd: Int32, path: String, bar: ProgressBar) throws {
        let chunk = 4 << 20
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buf.deallocate() }
        for e in try reader.allExtents() {
            if e.kind.readsAsZero { bar.advance(by: e.length); continue }
            var off = e.offset
            while off < e.end {
                let part = UnsafeMutableRawBufferPointer(rebasing: buf[0..<Int(min(UInt64(chunk), e.end - off))])
                try reader.read(at: off, into: part)
                try RawFile.writeFully(fd, UnsafeRawBufferPointer(part), at: off, path: path)
                bar.advance(by: UInt64(part.count))
                off += UInt64(part.count)
            }
        }
    }


    /// True when every byte is zero; stops at the first non-zero word.
    static func isAllZero(_ p: UnsafeRawBufferPointer) -> Bool { BackupImageWriter.allZero(p) }
}
