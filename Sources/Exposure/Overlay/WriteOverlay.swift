import BlockCore
#if canImport(Glibc)
import Glibc
#endif

/// Writes to an exposed disk, kept beside it and never passed to the base (the backup).
///
/// Two files: `PATH` holds written units at their virtual offsets (a sparse file the size of the
/// disk), `PATH.map` is the map journal (see `OverlayJournal`) naming the units that hold data and
/// recording the logical size. A write lands in the data file first and is journaled second, and
/// only then acknowledged, so a `kill -9` at any point loses no acknowledged write: the page cache
/// keeps both, and a unit is never named in the journal before its bytes are in the data file.
/// `flush()` fsyncs both files (durability across power loss, as for any disk with a write cache).
/// Partial units are filled by read-modify-write from the merged view, so the journal only ever
/// names whole units.
///
/// Growth: the logical size may range from the base's size up to `maxSize` (given at open; equal
/// to the base's size unless the front-end allows growth). Bytes past the base read as zeros
/// unless written. A size change is journaled and fdatasync'd before it is acknowledged. The data
/// file never holds bytes past the logical size (a shrink truncates it after journaling the new
/// size, and reopening repeats that truncation), so bytes a shrink cut read as zeros if the file
/// grows again.
public final class WriteOverlay: ResizableBlockSource, @unchecked Sendable {
    // @unchecked: `present` and `logicalSize` live behind locks; `journalFD`, `sequence` and
    // `sizeRecords` are only touched under `writeLock`; the other descriptors are immutable.
    public let base: any BlockSource
    public let path: String
    public let journalPath: String
    public let unitSize: UInt64
    /// The base's size: the least logical size (`minSize`).
    public let baseSize: UInt64
    public let maxSize: UInt64
    private let logicalSize: Locked<UInt64>
    private let dataFD: Int32
    private var journalFD: Int32
    private let identity: [UInt8]
    private let present = Locked(UnitRangeSet())
    /// Serializes writers and size changes: read-modify-write of a partial unit must not
    /// interleave with another writer of the same unit, and journal sequence numbers must follow
    /// append order.
    private let writeLock = NSLockish()
    private var sequence: UInt32
    private var sizeRecords: UInt32
    /// What reopening found (records replayed, torn bytes dropped).
    public let replayedRecords: UInt32
    public let droppedTornBytes: Int
    /// Opened with `readOnly`: files opened O_RDONLY, never created or repaired, writes refused.
    public let isReadOnly: Bool
    /// True when reopening rewrote the journal (a version 1 journal upgraded, or a new size limit).
    public let rewroteJournal: Bool
    /// Size records appended before the journal is compacted (tests lower it; a reader accepts
    /// up to `OverlayJournal.maxSizeRecords`). Read under `writeLock`.
    var compactAfterSizeRecords = OverlayJournal.maxSizeRecords - 1

    public static let defaultUnitSize: UInt32 = 64 << 10

    /// The current logical size.
    public var size: UInt64 { logicalSize.current }
    public var minSize: UInt64 { baseSize }

    /// Opens the overlay at `path` over `base`, creating both files if neither exists.
    /// `baseIdentity` (up to 32 bytes) is recorded at creation and must match on reopen, so an
    /// overlay is never replayed over a different base. `maxSize` (default: the base's size, no
    /// growth) is the largest logical size; an overlay that already grew past a smaller `maxSize`
    /// is refused. `readOnly` opens an existing overlay for serving only (a layer that must not
    /// change while it is served): both files must exist, a torn journal tail is ignored in
    /// memory rather than truncated, nothing is rewritten, and writes throw.
    public init(base: any BlockSource, path: String, unitSize: UInt32 = WriteOverlay.defaultUnitSize,
                baseIdentity: [UInt8] = [], maxSize: UInt64? = nil, readOnly: Bool = false) throws {
        precondition(unitSize >= 512 && unitSize & (unitSize - 1) == 0, "unit size must be a power of two ≥ 512")
        let limit = max(maxSize ?? base.size, base.size)
        precondition(limit <= OverlayJournal.maxLimit, "size limit beyond \(OverlayJournal.maxLimit)")
        self.base = base
        self.path = path
        self.journalPath = path + ".map"
        self.baseSize = base.size
        self.maxSize = limit
        let identity = Array(baseIdentity.prefix(32)) + [UInt8](repeating: 0, count: max(0, 32 - baseIdentity.count))
        self.identity = identity

        self.isReadOnly = readOnly
        let journalExists = access(journalPath, F_OK) == 0
        if !journalExists && readOnly {
            throw IOError("open overlay journal", path: journalPath, errno: ENOENT)
        }
        if !journalExists {
            try WriteOverlay.createFiles(path: path, journalPath: journalPath,
                                         header: .init(unitSize: unitSize, virtualSize: base.size, baseIdentity: identity, sizeLimit: limit))
        }
        let dfd = open(path, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC)
        guard dfd >= 0 else { throw IOError("open overlay data", path: path, errno: errno) }
        var jfd = open(journalPath, (readOnly ? O_RDONLY : O_RDWR | O_APPEND) | O_CLOEXEC)
        guard jfd >= 0 else { let e = errno; close(dfd); throw IOError("open overlay journal", path: journalPath, errno: e) }
        do {
            let bytes = try OverlayJournal.load(fd: jfd, path: journalPath)
            var replay = try OverlayJournal.replay(bytes, path: journalPath)
            guard replay.header.virtualSize == base.size else {
                throw FormatError("write overlay journal", "header", at: 16,
                                  "records a disk of \(replay.header.virtualSize) bytes, the base has \(base.size) (\(journalPath))")
            }
            guard replay.header.baseIdentity == identity else {
                throw FormatError("write overlay journal", "header", at: 24, "was made over a different base (\(journalPath))")
            }
            guard replay.size <= limit else {
                throw FormatError("write overlay journal", "size", at: 0,
                                  "the overlay grew to \(replay.size) bytes, beyond the limit \(limit) it is opened with now (\(journalPath))")
            }
            if replay.tornBytes > 0, !readOnly, ftruncate(jfd, off_t(replay.validLength)) != 0 {
                throw IOError("truncate torn journal record", path: journalPath, errno: errno)
            }
            // Data past the logical size is garbage from a shrink cut short by a crash (the size
            // record is durable before the data file is truncated): cut it again.
            var st = stat()
            guard fstat(dfd, &st) == 0 else { throw IOError("stat", path: path, errno: errno) }
            if !readOnly, UInt64(st.st_size) > replay.size, ftruncate(dfd, off_t(replay.size)) != 0 {
                throw IOError("truncate overlay data", path: path, errno: errno)
            }
            let header = OverlayJournal.Header(unitSize: replay.header.unitSize, virtualSize: base.size,
                                               baseIdentity: identity, sizeLimit: limit)
            let rewrite = !readOnly && (replay.header.version != OverlayJournal.version || replay.header.sizeLimit != limit)
            if rewrite {
                // Atomic (rename): either the old journal or the new one describes the overlay.
                let (fd, records, sizeRecords, kept) = try WriteOverlay.rewriteJournal(
                    journalPath: journalPath, header: header, present: replay.present, size: replay.size)
                close(jfd)
                jfd = fd
                replay.records = records
                replay.sizeRecords = sizeRecords
                // Memory must name exactly the units the journal names, or a unit dropped here
                // and written later would never be journaled.
                replay.present = kept
            }
            self.unitSize = UInt64(replay.header.unitSize)
            self.sequence = replay.records
            self.sizeRecords = replay.sizeRecords
            self.replayedRecords = replay.records
            self.droppedTornBytes = replay.tornBytes
            self.rewroteJournal = rewrite
            self.logicalSize = Locked(replay.size)
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

    /// The units holding written data, as byte ranges (within the current size).
    public var writtenRanges: [Range<UInt64>] {
        let size = self.size
        return present.current.ranges.compactMap {
            let lo = $0.lowerBound * unitSize, hi = min($0.upperBound * unitSize, size)
            return lo < hi ? lo..<hi : nil
        }
    }

    private static func createFiles(path: String, journalPath: String, header: OverlayJournal.Header) throws {
        let dfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard dfd >= 0 else { throw IOError("create overlay data", path: path, errno: errno) }
        defer { close(dfd) }
        guard ftruncate(dfd, off_t(header.virtualSize)) == 0 else { throw IOError("size overlay data", path: path, errno: errno) }
        guard fsync(dfd) == 0 else { throw IOError("fsync", path: path, errno: errno) }
        let fd = try rewriteJournal(journalPath: journalPath, header: header, present: UnitRangeSet(), size: header.virtualSize).fd
        close(fd)
    }

    /// Writes a whole journal describing `present` and `size` beside `journalPath`, syncs it and
    /// renames it into place, so a half-written journal is never seen; returns an append
    /// descriptor on it and its record counts. Units wholly past `size` are left out: their data
    /// was truncated away, and past the base they read as zeros either way.
    private static func rewriteJournal(journalPath: String, header: OverlayJournal.Header, present: UnitRangeSet,
                                       size: UInt64) throws -> (fd: Int32, records: UInt32, sizeRecords: UInt32, present: UnitRangeSet) {
        let unit = UInt64(header.unitSize)
        let liveUnits = (size + unit - 1) / unit
        var bytes = OverlayJournal.encode(header)
        var records: UInt32 = 0
        var kept = UnitRangeSet()
        for r in present.ranges where r.lowerBound < liveUnits {
            let hi = min(r.upperBound, liveUnits)
            bytes += OverlayJournal.encodeRecord(first: r.lowerBound, count: hi - r.lowerBound, sequence: records)
            kept.insert(r.lowerBound..<hi)
            records += 1
        }
        var sizeRecords: UInt32 = 0
        if size != header.virtualSize {
            bytes += OverlayJournal.encodeSizeRecord(size: size, sequence: records)
            records += 1
            sizeRecords = 1
        }
        let tmp = journalPath + ".tmp"
        let tfd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard tfd >= 0 else { throw IOError("create overlay journal", path: tmp, errno: errno) }
        defer { close(tfd) }
        try bytes.withUnsafeBytes { try pwriteAll(tfd, $0, at: 0, path: tmp) }
        guard fsync(tfd) == 0 else { throw IOError("fsync", path: tmp, errno: errno) }
        guard rename(tmp, journalPath) == 0 else { throw IOError("rename", path: journalPath, errno: errno) }
        syncDirectory(of: journalPath)
        let fd = open(journalPath, O_RDWR | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { throw IOError("open overlay journal", path: journalPath, errno: errno) }
        return (fd, records, sizeRecords, kept)
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
                try readBase(at: lo, into: slice)
            }
        }
    }

    /// Unwritten bytes: the base's below its size, zeros past it (the grown tail).
    private func readBase(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        let inBase = offset < baseSize ? Int(min(UInt64(buffer.count), baseSize - offset)) : 0
        if inBase > 0 { try base.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<inBase])) }
        if inBase < buffer.count {
            UnsafeMutableRawBufferPointer(rebasing: buffer[inBase...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    /// Base extents with written units reported as data; the unwritten grown tail is absent.
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
                if lo < baseSize { out += try base.extents(in: lo..<min(hi, baseSize)) }
                if hi > baseSize {
                    let from = max(lo, baseSize)
                    out.append(Extent(offset: from, length: hi - from, kind: .absent))
                }
            }
        }
        return coalesce(out)
    }

    // MARK: WritableBlockSource

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        guard !isReadOnly else { throw BlockSourceError.readOnly("overlay \(path) (opened read-only)") }
        try writeLock.withLock { try writeLocked(at: offset, from: buffer) }
    }

    public func writeExtending(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        guard !isReadOnly else { throw BlockSourceError.readOnly("overlay \(path) (opened read-only)") }
        try writeLock.withLock {
            let (end, overflow) = offset.addingReportingOverflow(UInt64(buffer.count))
            guard !overflow else { throw ResizeError.beyondLimit(requested: UInt64.max, limit: maxSize) }
            if end > size { try resizeLocked(to: end) }
            try writeLocked(at: offset, from: buffer)
        }
    }

    /// Lab fault (`drop-write:payload`, test-only): the first write at or past this offset is
    /// acknowledged and discarded. Read and written under `writeLock`.
    private var dropWriteAtOrAfter: UInt64?

    /// Arms the `drop-write:payload` fault (`FaultPlan`); lab mutation runs only.
    public func injectDroppedWrite(atOrAfter offset: UInt64) { writeLock.withLock { dropWriteAtOrAfter = offset } }

    private func writeLocked(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        if let drop = dropWriteAtOrAfter, offset >= drop {
            dropWriteAtOrAfter = nil
            return
        }
        let size = self.size
        let end = offset + UInt64(buffer.count)
        let firstUnit = offset / unitSize
        let endUnit = (end - 1) / unitSize + 1
        let spanLo = firstUnit * unitSize
        // Never past the logical size: the data file holds no bytes beyond it.
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

    public func flush() throws {
        guard !isReadOnly else { return }
        guard fdatasync(dataFD) == 0 else { throw IOError("fsync", path: path, errno: errno) }
        try writeLock.withLock {
            guard fdatasync(journalFD) == 0 else { throw IOError("fsync", path: journalPath, errno: errno) }
        }
    }

    // MARK: ResizableBlockSource

    public func resize(to newSize: UInt64) throws {
        guard !isReadOnly else { throw BlockSourceError.readOnly("overlay \(path) (opened read-only)") }
        try writeLock.withLock { try resizeLocked(to: newSize) }
    }

    private func resizeLocked(to newSize: UInt64) throws {
        guard newSize >= baseSize else { throw ResizeError.belowMinimum(requested: newSize, minimum: baseSize) }
        guard newSize <= maxSize else { throw ResizeError.beyondLimit(requested: newSize, limit: maxSize) }
        let old = size
        guard newSize != old else { return }
        if sizeRecords >= compactAfterSizeRecords {
            // Keep the journal bounded: one record per written run plus this size change.
            let header = OverlayJournal.Header(unitSize: UInt32(unitSize), virtualSize: baseSize, baseIdentity: identity, sizeLimit: maxSize)
            let (fd, records, sizes, kept) = try WriteOverlay.rewriteJournal(journalPath: journalPath, header: header,
                                                                            present: present.current, size: old)
            close(journalFD)
            journalFD = fd
            sequence = records
            sizeRecords = sizes
            // Memory names exactly what the journal names (see `init`).
            present.withLock { $0 = kept }
        }
        // The new size is durable before anything else changes or the caller hears back.
        let rec = OverlayJournal.encodeSizeRecord(size: newSize, sequence: sequence)
        try rec.withUnsafeBytes { try appendAll(journalFD, $0, path: journalPath) }
        sequence += 1
        sizeRecords += 1
        guard fdatasync(journalFD) == 0 else { throw IOError("fsync", path: journalPath, errno: errno) }
        if newSize < old, ftruncate(dataFD, off_t(newSize)) != 0 {
            throw IOError("truncate overlay data", path: path, errno: errno)
        }
        logicalSize.withLock { $0 = newSize }
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
