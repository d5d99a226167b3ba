import BlockCore
#if canImport(Glibc)
import Glibc
#endif

/// Writes to an exposed disk, kept beside it and never passed to the base (the backup).
///
/// Two files: `PATH` holds written units at their virtual offsets (a sparse file the size of the
/// disk), `PATH.map` is the map journal (see `OverlayJournal`) naming the units that hold data.
/// A write lands in the data file first and is journaled second, and only then acknowledged, so a
/// `kill -9` at any point loses no acknowledged write: the page cache keeps both, and a unit is
/// never named in the journal before its bytes are in the data file. `flush()` fsyncs both files
/// (durability across power loss, as for any disk with a write cache). Partial units are filled by
/// read-modify-write from the merged view, so the journal only ever names whole units.
public final class WriteOverlay: WritableBlockSource, @unchecked Sendable {
    // @unchecked: `present` and `sequence` live behind locks; descriptors are immutable.
    public let base: any BlockSource
    public let path: String
    public let journalPath: String
    public let unitSize: UInt64
    public let size: UInt64
    private let dataFD: Int32
    private let journalFD: Int32
    private let present = Locked(UnitRangeSet())
    /// Serializes writers: read-modify-write of a partial unit must not interleave with another
    /// writer of the same unit, and journal sequence numbers must follow append order.
    private let writeLock = NSLockish()
    private var sequence: UInt32
    /// What reopening found (records replayed, torn bytes dropped).
    public let replayedRecords: UInt32
    public let droppedTornBytes: Int
    /// Opened with `readOnly`: files opened O_RDONLY, never created or repaired, writes refused.
    public let isReadOnly: Bool

    public static let defaultUnitSize: UInt32 = 64 << 10

    /// Opens the overlay at `path` over `base`, creating both files if neither exists.
    /// `baseIdentity` (up to 32 bytes) is recorded at creation and must match on reopen, so an
    /// overlay is never replayed over a different base. `readOnly` opens an existing overlay for
    /// serving only (a layer that must not change while it is served): both files must exist,
    /// a torn journal tail is ignored in memory rather than truncated, and writes throw.
    public init(base: any BlockSource, path: String, unitSize: UInt32 = WriteOverlay.defaultUnitSize,
                baseIdentity: [UInt8] = [], readOnly: Bool = false) throws {
        precondition(unitSize >= 512 && unitSize & (unitSize - 1) == 0, "unit size must be a power of two ≥ 512")
        self.base = base
        self.path = path
        self.journalPath = path + ".map"
        self.size = base.size
        let identity = Array(baseIdentity.prefix(32)) + [UInt8](repeating: 0, count: max(0, 32 - baseIdentity.count))

        self.isReadOnly = readOnly
        let journalExists = access(journalPath, F_OK) == 0
        if !journalExists && readOnly {
            throw IOError("open overlay journal", path: journalPath, errno: ENOENT)
        }
        if !journalExists {
            try WriteOverlay.createFiles(path: path, journalPath: journalPath,
                                         header: .init(unitSize: unitSize, virtualSize: base.size, baseIdentity: identity))
        }
        let dfd = open(path, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC)
        guard dfd >= 0 else { throw IOError("open overlay data", path: path, errno: errno) }
        let jfd = open(journalPath, (readOnly ? O_RDONLY : O_RDWR | O_APPEND) | O_CLOEXEC)
        guard jfd >= 0 else { let e = errno; close(dfd); throw IOError("open overlay journal", path: journalPath, errno: e) }
        do {
            let bytes = try WriteOverlay.readWhole(fd: jfd, path: journalPath, limit: base.size, unitSize: unitSize)
            let replay = try OverlayJournal.replay(bytes, path: journalPath)
            guard replay.header.virtualSize == base.size else {
                throw FormatError("write overlay journal", "header", at: 16,
                                  "records a disk of \(replay.header.virtualSize) bytes, the base has \(base.size) (\(journalPath))")
            }
            guard replay.header.baseIdentity == identity else {
                throw FormatError("write overlay journal", "header", at: 24, "was made over a different base (\(journalPath))")
            }
            if replay.tornBytes > 0, !readOnly, ftruncate(jfd, off_t(replay.validLength)) != 0 {
                throw IOError("truncate torn journal record", path: journalPath, errno: errno)
            }
            self.unitSize = UInt64(replay.header.unitSize)
            self.sequence = replay.records
            self.replayedRecords = replay.records
            self.droppedTornBytes = replay.tornBytes
            present.withLock { $0 = replay.present }
        } catch {
            close(dfd); close(jfd)
            throw error
        }
        self.dataFD = dfd
        self.journalFD = jfd
    }

    deinit {
        close(dataFD)
        close(journalFD)
    }

    /// The units holding written data, as byte ranges.
    public var writtenRanges: [Range<UInt64>] {
        present.current.ranges.map { ($0.lowerBound * unitSize)..<min($0.upperBound * unitSize, size) }
    }

    private static func createFiles(path: String, journalPath: String, header: OverlayJournal.Header) throws {
        let dfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard dfd >= 0 else { throw IOError("create overlay data", path: path, errno: errno) }
        defer { close(dfd) }
        guard ftruncate(dfd, off_t(header.virtualSize)) == 0 else { throw IOError("size overlay data", path: path, errno: errno) }
        guard fsync(dfd) == 0 else { throw IOError("fsync", path: path, errno: errno) }
        // The journal appears whole or not at all: written aside, synced, then renamed.
        let tmp = journalPath + ".tmp"
        let tfd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard tfd >= 0 else { throw IOError("create overlay journal", path: tmp, errno: errno) }
        defer { close(tfd) }
        let h = OverlayJournal.encode(header)
        try h.withUnsafeBytes { try pwriteAll(tfd, $0, at: 0, path: tmp) }
        guard fsync(tfd) == 0 else { throw IOError("fsync", path: tmp, errno: errno) }
        guard rename(tmp, journalPath) == 0 else { throw IOError("rename", path: journalPath, errno: errno) }
        syncDirectory(of: journalPath)
    }

    private static func readWhole(fd: Int32, path: String, limit virtualSize: UInt64, unitSize: UInt32) throws -> [UInt8] {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw IOError("stat", path: path, errno: errno) }
        // A valid journal has at most one record per unit of the disk (bounded before allocating).
        let units = (virtualSize + 511) / 512
        let maxBytes = UInt64(OverlayJournal.headerSize) + UInt64(OverlayJournal.recordSize) * (units + 1)
        guard st.st_size >= 0, UInt64(st.st_size) <= maxBytes else {
            throw FormatError("write overlay journal", "file", at: 0, "\(st.st_size) bytes is more than a disk of \(virtualSize) bytes can need (\(path))")
        }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, $0.count - done, off_t(done)) }
            if n < 0 { if errno == EINTR { continue }; throw IOError("read", path: path, errno: errno) }
            if n == 0 { bytes.removeLast(bytes.count - done); break }
            done += n
        }
        return bytes
    }

    // MARK: BlockSource

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        let end = offset + UInt64(buffer.count)
        let runs = present.withLock { $0.runs(in: (offset / unitSize)..<((end - 1) / unitSize + 1)) }
        for run in runs {
            let lo = max(run.range.lowerBound * unitSize, offset)
            let hi = min(run.range.upperBound * unitSize, end)
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(lo - offset)..<Int(hi - offset)])
            if run.present {
                try preadAll(dataFD, slice, at: lo, path: path)
            } else {
                try base.read(at: lo, into: slice)
            }
        }
    }

    /// Base extents with written units reported as data.
    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        let written = present.withLock { $0.runs(in: (r.lowerBound / unitSize)..<((r.upperBound - 1) / unitSize + 1)) }
        var out: [Extent] = []
        for run in written {
            let lo = max(run.range.lowerBound * unitSize, r.lowerBound)
            let hi = min(run.range.upperBound * unitSize, r.upperBound)
            if run.present {
                out.append(Extent(offset: lo, length: hi - lo, kind: .data))
            } else {
                out += try base.extents(in: lo..<hi)
            }
        }
        return coalesce(out)
    }

    // MARK: WritableBlockSource

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        guard !isReadOnly else { throw BlockSourceError.readOnly("overlay \(path) (opened read-only)") }
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        try writeLock.withLock {
            let end = offset + UInt64(buffer.count)
            let firstUnit = offset / unitSize
            let endUnit = (end - 1) / unitSize + 1
            let spanLo = firstUnit * unitSize
            let spanHi = min(endUnit * unitSize, size)
            // Whole units: head and tail come from the current merged view, the middle from the caller.
            var span = [UInt8](repeating: 0, count: Int(spanHi - spanLo))
            try span.withUnsafeMutableBytes { s in
                if offset > spanLo {
                    try read(at: spanLo, into: UnsafeMutableRawBufferPointer(rebasing: s[0..<Int(offset - spanLo)]))
                }
                if end < spanHi {
                    try read(at: end, into: UnsafeMutableRawBufferPointer(rebasing: s[Int(end - spanLo)...]))
                }
                UnsafeMutableRawBufferPointer(rebasing: s[Int(offset - spanLo)..<Int(end - spanLo)]).copyMemory(from: buffer)
                try pwriteAll(dataFD, UnsafeRawBufferPointer(s), at: spanLo, path: path)
            }
            // Journal after the data (a unit is never named before its bytes exist), then publish.
            let newRuns = present.withLock { $0.missing(in: firstUnit..<endUnit) }
            for run in newRuns {
                let rec = OverlayJournal.encodeRecord(first: run.lowerBound, count: UInt64(run.count), sequence: sequence)
                try rec.withUnsafeBytes { try appendAll(journalFD, $0, path: journalPath) }
                sequence += 1
                present.withLock { $0.insert(run) }
            }
        }
    }

    public func flush() throws {
        guard !isReadOnly else { return }
        guard fdatasync(dataFD) == 0 else { throw IOError("fsync", path: path, errno: errno) }
        guard fdatasync(journalFD) == 0 else { throw IOError("fsync", path: journalPath, errno: errno) }
    }
}

func pwriteAll(_ fd: Int32, _ buf: UnsafeRawBufferPointer, at offset: UInt64, path: String) throws {
    var done = 0
    while done < buf.count {
        let n = pwrite(fd, buf.baseAddress! + done, buf.count - done, off_t(offset) + off_t(done))
        if n < 0 { if errno == EINTR { continue }; throw IOError("write", path: path, errno: errno) }
        done += n
    }
}

private func appendAll(_ fd: Int32, _ buf: UnsafeRawBufferPointer, path: String) throws {
    // One write() of a 32-byte record on an O_APPEND descriptor: not split by a signal or a kill.
    while true {
        let n = Glibc.write(fd, buf.baseAddress!, buf.count)
        if n < 0 { if errno == EINTR { continue }; throw IOError("append", path: path, errno: errno) }
        guard n == buf.count else { throw IOError("append (short write)", path: path, errno: EIO) }
        return
    }
}

private func preadAll(_ fd: Int32, _ buf: UnsafeMutableRawBufferPointer, at offset: UInt64, path: String) throws {
    var done = 0
    while done < buf.count {
        let n = pread(fd, buf.baseAddress! + done, buf.count - done, off_t(offset) + off_t(done))
        if n < 0 { if errno == EINTR { continue }; throw IOError("read", path: path, errno: errno) }
        if n == 0 {
            (buf.baseAddress! + done).initializeMemory(as: UInt8.self, repeating: 0, count: buf.count - done)
            return
        }
        done += n
    }
}

private func syncDirectory(of path: String) {
    let dir = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
    let fd = open(dir.isEmpty ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if fd >= 0 { _ = fsync(fd); close(fd) }
}
