import BlockCore
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Copies a block source into a new file, byte-identical and sparse: only `.data` extents are
/// written (holes read back as zeros), optionally skipping data chunks that are all zeros.
///
/// This is how `convert` writes both raw output (the disk) and VHDX output (a `VHDXView` of
/// the disk), so a converted file is exactly the view's stream.
public enum SparseImageWriter {
    public struct Options: Sendable {
        /// Bytes per read/write. Large requests keep syscall overhead negligible.
        public var chunkSize: Int = 8 << 20
        /// Worker threads; each reads and writes its own chunks, overlapping I/O.
        public var threads: Int = 2
        /// Leave holes for data chunks that turn out to be all zeros (raw output).
        public var skipZeroChunks: Bool = false
        /// Bytes at the start of the file written last, after everything else is durable, so a
        /// half-written file never carries a valid format identifier (8 for VHDX's `vhdxfile`).
        public var deferredPrefix: Int = 0
        /// fdatasync before the deferred prefix and at the end. Without it the identifier is
        /// still written last, but the page cache may flush out of order (qemu-img convert's
        /// default does not flush the data either).
        public var sync: Bool = true
        /// Copy ranges that are plain file bytes (`FileBackedSource`, e.g. the payload of a
        /// VHDX view of a raw file) with `copy_file_range(2)`, falling back to read and write
        /// where the kernel cannot. Not used with `skipZeroChunks`, which must see the bytes.
        public var kernelCopy: Bool = true
        public var progress: ProgressBar?

        public init(chunkSize: Int = 8 << 20, threads: Int = 2, skipZeroChunks: Bool = false,
                    deferredPrefix: Int = 0, sync: Bool = true, kernelCopy: Bool = true, progress: ProgressBar? = nil) {
            self.chunkSize = chunkSize
            self.threads = threads
            self.skipZeroChunks = skipZeroChunks
            self.deferredPrefix = deferredPrefix
            self.sync = sync
            self.kernelCopy = kernelCopy
            self.progress = progress
        }
    }

    public struct Stats: Sendable, Equatable {
        /// Bytes of `.data` extents examined.
        public var dataBytes: UInt64
        /// Bytes actually written (data minus skipped zero chunks).
        public var writtenBytes: UInt64
    }

    /// The total number of bytes a copy of `source` examines (for progress bars).
    public static func dataBytes(of source: any BlockSource) throws -> UInt64 {
        try source.allExtents().filter { $0.kind == .data }.reduce(0) { $0 + $1.length }
    }

    @discardableResult
    public static func write(_ source: any BlockSource, toPath path: String, options: Options = Options()) throws -> Stats {
        precondition(options.chunkSize > 0 && options.threads > 0, "chunk size and threads must be positive")
        let chunk = UInt64(options.chunkSize)
        // Chunk boundaries on multiples of the chunk size keep writes aligned.
        var chunks: [Range<UInt64>] = []
        var dataBytes: UInt64 = 0
        for e in try source.allExtents() where e.kind == .data {
            dataBytes += e.length
            var lo = e.offset
            while lo < e.end {
                let hi = min(e.end, (lo / chunk + 1) * chunk)
                chunks.append(lo..<hi)
                lo = hi
            }
        }

        // Create/truncate through a descriptor closed at once, then write through a second one
        // (as qemu-img does). ext4's auto_da_alloc flushes a file truncated to zero when the next
        // descriptor on it is closed: closed while empty that costs nothing; closed after the copy
        // it would write back the whole image synchronously, a third of the time of a convert.
        let created = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard created >= 0 else { throw IOError("create", path: path, errno: errno) }
        close(created)
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw IOError("open", path: path, errno: errno) }
        defer { close(fd) }
        guard ftruncate(fd, off_t(source.size)) == 0 else { throw IOError("truncate", path: path, errno: errno) }

        let next = Atomic<Int>(0)
        let written = Atomic<UInt64>(0)
        let failure = Locked<(any Error)?>(nil)
        let deferred = UInt64(max(0, options.deferredPrefix))
        let chunkList = chunks
        let workers = min(options.threads, max(1, chunkList.count))
        let fileBacked = options.kernelCopy && !options.skipZeroChunks && KernelCopy.isAvailable
            ? source as? any FileBackedSource : nil
        let kernelCopyWorks = Atomic<Bool>(fileBacked != nil)
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            // Allocated on first use: a copy done entirely by the kernel needs no buffer.
            var buffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
            defer { buffer.deallocate() }
            while failure.current == nil {
                let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
                guard i < chunkList.count else { break }
                let r = chunkList[i]
                do {
                    if let fileBacked, r.lowerBound >= deferred, kernelCopyWorks.load(ordering: .relaxed),
                       let spans = fileBacked.fileSpans(in: r) {
                        switch try copy(spans, to: fd, at: r.lowerBound, path: path) {
                        case .copied:
                            written.wrappingAdd(UInt64(r.count), ordering: .relaxed)
                            options.progress?.advance(by: UInt64(r.count))
                            continue
                        case .unsupported:
                            kernelCopyWorks.store(false, ordering: .relaxed)
                        case .shortSource:
                            break  // the source shrank: read() defines what the chunk holds
                        }
                    }
                    if buffer.baseAddress == nil {
                        buffer = .allocate(byteCount: options.chunkSize, alignment: 4096)
                    }
                    let buf = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(r.count)])
                    try source.read(at: r.lowerBound, into: buf)
                    if !(options.skipZeroChunks && isAllZero(UnsafeRawBufferPointer(buf))) {
                        let skip = r.lowerBound < deferred ? Int(min(deferred, r.upperBound) - r.lowerBound) : 0
                        try RawFile.writeFully(fd, UnsafeRawBufferPointer(rebasing: buf[skip...]), at: r.lowerBound + UInt64(skip), path: path)
                        written.wrappingAdd(UInt64(r.count), ordering: .relaxed)
                    }
                    options.progress?.advance(by: UInt64(r.count))
                } catch {
                    failure.withLock { if $0 == nil { $0 = error } }
                }
            }
        }
        if let error = failure.current { throw error }

        if deferred > 0 && source.size > 0 {
            if options.sync { try datasync(fd, path) }
            let n = Int(min(deferred, source.size))
            let prefix = try source.read(at: 0, count: n)
            if !(options.skipZeroChunks && prefix.allSatisfy { $0 == 0 }) {
                try prefix.withUnsafeBytes { try RawFile.writeFully(fd, $0, at: 0, path: path) }
            }
        }
        if options.sync { try datasync(fd, path) }
        options.progress?.finish()
        return Stats(dataBytes: dataBytes, writtenBytes: written.load(ordering: .relaxed))
    }

    /// Copies `spans` to `fd` from `offset` on; zero spans stay holes of the fresh file. Stops at
    /// the first span the kernel does not copy whole (the caller then rewrites the chunk).
    private static func copy(_ spans: [FileSpan], to fd: Int32, at offset: UInt64, path: String) throws -> KernelCopy.Outcome {
        var out = offset
        for span in spans {
            if case let .file(input, at, length) = span {
                let r = try KernelCopy.copy(from: input, at: at, to: fd, at: out, length: Int(length), path: path)
                guard r == .copied else { return r }
            }
            out += span.length
        }
        return .copied
    }

    /// True when every byte is zero; stops at the first non-zero word.
    public static func isAllZero(_ buf: UnsafeRawBufferPointer) -> Bool {
        let words = buf.count / 8
        if words > 0 {
            let p = buf.baseAddress!
            var i = 0
            while i < words {
                if p.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
                i += 1
            }
        }
        for i in (words * 8)..<buf.count where buf[i] != 0 { return false }
        return true
    }


    private static func datasync(_ fd: Int32, _ path: String) throws {
        guard fdatasync(fd) == 0 else { throw IOError("fdatasync", path: path, errno: errno) }
    }
}
