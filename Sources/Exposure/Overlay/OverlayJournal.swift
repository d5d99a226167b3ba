import BlockCore
#if canImport(Glibc)
import Glibc
#endif

/// The write overlay's map journal: an append-only file saying which units of the data file hold
/// written bytes and what the exposed file's logical size is. Documented in docs/frontends.md
/// ("Write overlay"); all integers little-endian.
///
/// Header, version 2 (96 bytes): magic `BLOVMAP1`, version u32 = 2, unit size u32, base size u64,
/// base identity (32 bytes, e.g. the backup's header digest; zeros when unknown), size limit u64
/// (the largest logical size the overlay may reach, ≥ the base size), reserved (28 zero bytes),
/// CRC-32C of bytes 0..<92 at 92.
/// Header, version 1 (64 bytes, still read): the same up to the identity, reserved u32 at 56,
/// CRC-32C of bytes 0..<60 at 60; its size limit is the base size (a version 1 overlay never grew).
/// Record (32 bytes): magic u32 `OVRC`, kind u32, two u64 fields at 8 and 16, sequence u32 (the
/// record's index), CRC-32C of bytes 0..<28 at 28. Kinds:
/// - 1 "present": units `[field8, field8 + field16)` now hold data;
/// - 2 "size" (version 2 only): the logical size is now `field8` (field16 = 0).
enum OverlayJournal {
    static let magic: [UInt8] = Array("BLOVMAP1".utf8)
    static let version: UInt32 = 2
    static let headerSizeV1 = 64
    static let headerSize = 96
    static let recordSize = 32
    static let recordMagic: UInt32 = 0x4352_564F // "OVRC"
    static let kindPresent: UInt32 = 1
    static let kindSize: UInt32 = 2
    /// Largest size limit accepted: far above any disk, low enough that unit and byte arithmetic
    /// on it cannot overflow.
    static let maxLimit: UInt64 = 1 << 56
    /// The writer rewrites the journal (compaction) before it holds more size records than this,
    /// so a reader can bound the journal's length: at most one present record per 512-byte unit of
    /// the size limit, plus this many size records.
    static let maxSizeRecords: UInt32 = 4096

    struct Header: Equatable {
        var unitSize: UInt32
        var virtualSize: UInt64
        var baseIdentity: [UInt8]
        /// The largest logical size (version 1: the base size).
        var sizeLimit: UInt64
        var version: UInt32 = OverlayJournal.version
    }

    static func encode(_ h: Header) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: headerSize)
        b.replaceSubrange(0..<8, with: magic)
        b.putLE32(version, at: 8)
        b.putLE32(h.unitSize, at: 12)
        b.putLE64(h.virtualSize, at: 16)
        b.replaceSubrange(24..<56, with: h.baseIdentity.prefix(32) + [UInt8](repeating: 0, count: max(0, 32 - h.baseIdentity.count)))
        b.putLE64(h.sizeLimit, at: 56)
        b.putLE32(CRC32C.checksum(Array(b[0..<92])), at: 92)
        return b
    }

    static func encodeRecord(first: UInt64, count: UInt64, sequence: UInt32) -> [UInt8] {
        record(kind: kindPresent, first, count, sequence: sequence)
    }

    static func encodeSizeRecord(size: UInt64, sequence: UInt32) -> [UInt8] {
        record(kind: kindSize, size, 0, sequence: sequence)
    }

    private static func record(kind: UInt32, _ a: UInt64, _ b: UInt64, sequence: UInt32) -> [UInt8] {
        var r = [UInt8](repeating: 0, count: recordSize)
        r.putLE32(recordMagic, at: 0)
        r.putLE32(kind, at: 4)
        r.putLE64(a, at: 8)
        r.putLE64(b, at: 16)
        r.putLE32(sequence, at: 24)
        r.putLE32(CRC32C.checksum(Array(r[0..<28])), at: 28)
        return r
    }

    /// Longest journal a header can justify (bounded before a journal is read into memory).
    static func maxLength(sizeLimit: UInt64) -> UInt64 {
        UInt64(headerSize) + UInt64(recordSize) * ((min(sizeLimit, maxLimit) + 511) / 512 + UInt64(maxSizeRecords) + 1)
    }

    struct Replay {
        var header: Header
        var present = UnitRangeSet()
        /// The logical size after the last good record (the base size if no size record).
        var size: UInt64
        var records: UInt32 = 0
        var sizeRecords: UInt32 = 0
        /// Bytes after the last good record that were dropped (a record torn by a crash).
        var tornBytes: Int = 0
        /// Length of the journal up to and including the last good record.
        var validLength: Int
    }

    static func parseHeader(_ bytes: [UInt8], path: String) throws -> Header {
        func fail(_ at: Int, _ why: String) -> FormatError {
            FormatError("write overlay journal", "header", at: UInt64(at), "\(why) (\(path))")
        }
        guard bytes.count >= headerSizeV1 else { throw fail(0, "journal is \(bytes.count) bytes, shorter than its header") }
        guard Array(bytes[0..<8]) == magic else { throw fail(0, "bad magic") }
        let v = bytes.le32(8)
        let unitSize = bytes.le32(12)
        let virtualSize = bytes.le64(16)
        let identity = Array(bytes[24..<56])
        let limit: UInt64
        switch v {
        case 1:
            guard CRC32C.checksum(Array(bytes[0..<60])) == bytes.le32(60) else { throw fail(60, "CRC-32C mismatch") }
            limit = virtualSize
        case 2:
            guard bytes.count >= headerSize else { throw fail(0, "journal is \(bytes.count) bytes, shorter than its version 2 header") }
            guard CRC32C.checksum(Array(bytes[0..<92])) == bytes.le32(92) else { throw fail(92, "CRC-32C mismatch") }
            guard bytes[64..<92].allSatisfy({ $0 == 0 }) else { throw fail(64, "reserved bytes are not zero") }
            limit = bytes.le64(56)
        default:
            // Both CRC layouts fail for an unknown version, so the version is checked first.
            throw fail(8, "unsupported version \(v) (this BootLab reads versions 1 and 2)")
        }
        guard unitSize >= 512, unitSize <= 1 << 24, unitSize & (unitSize - 1) == 0 else {
            throw fail(12, "unit size \(unitSize) is not a power of two in 512...16 MiB")
        }
        guard virtualSize <= maxLimit else { throw fail(16, "base size \(virtualSize) is beyond \(maxLimit)") }
        guard limit >= virtualSize, limit <= maxLimit else {
            throw fail(56, "size limit \(limit) is below the base size \(virtualSize) or beyond \(maxLimit)")
        }
        return Header(unitSize: unitSize, virtualSize: virtualSize, baseIdentity: identity, sizeLimit: limit, version: v)
    }

    /// Parses a whole journal. Every field is bounded: a present record must name units inside the
    /// size limit and units not already present (the writer only journals newly written units), a
    /// size record a size between the base size and the limit, and there are at most
    /// `maxSizeRecords` size records, so a valid journal's length is bounded by its header.
    static func replay(_ bytes: [UInt8], path: String) throws -> Replay {
        func fail(_ structure: String, _ at: Int, _ why: String) -> FormatError {
            FormatError("write overlay journal", structure, at: UInt64(at), "\(why) (\(path))")
        }
        let header = try parseHeader(bytes, path: path)
        let start = header.version == 1 ? headerSizeV1 : headerSize
        let unitCount = (header.sizeLimit + UInt64(header.unitSize) - 1) / UInt64(header.unitSize)
        var r = Replay(header: header, size: header.virtualSize, validLength: start)
        var pos = start
        while pos + recordSize <= bytes.count {
            let rec = Array(bytes[pos..<pos + recordSize])
            let isLast = pos + 2 * recordSize > bytes.count
            guard CRC32C.checksum(Array(rec[0..<28])) == rec.le32(28), rec.le32(0) == recordMagic else {
                // A crash can only tear the final append; damage before it is corruption.
                if isLast { break }
                throw fail("record \(r.records)", pos, "CRC-32C mismatch before the end of the journal")
            }
            guard rec.le32(24) == r.records else {
                throw fail("record \(r.records)", pos + 24, "sequence \(rec.le32(24)), expected \(r.records)")
            }
            let a = rec.le64(8), b = rec.le64(16)
            switch rec.le32(4) {
            case kindPresent:
                guard b > 0, a < unitCount, b <= unitCount - a else {
                    throw fail("record \(r.records)", pos + 8, "units \(a)+\(b) outside the overlay's \(unitCount) units")
                }
                guard r.present.missing(in: a..<a + b) == [a..<a + b] else {
                    throw fail("record \(r.records)", pos + 8, "units \(a)+\(b) were already journaled")
                }
                r.present.insert(a..<a + b)
            case kindSize where header.version >= 2:
                guard b == 0 else { throw fail("record \(r.records)", pos + 16, "size record's second field is \(b), not 0") }
                guard a >= header.virtualSize, a <= header.sizeLimit else {
                    throw fail("record \(r.records)", pos + 8, "size \(a) outside \(header.virtualSize)...\(header.sizeLimit)")
                }
                guard r.sizeRecords < maxSizeRecords else {
                    throw fail("record \(r.records)", pos, "more than \(maxSizeRecords) size records (the writer compacts before that)")
                }
                r.sizeRecords += 1
                r.size = a
            default:
                throw fail("record \(r.records)", pos + 4, "unknown kind \(rec.le32(4))")
            }
            r.records += 1
            pos += recordSize
            r.validLength = pos
        }
        r.tornBytes = bytes.count - r.validLength
        return r
    }

    /// Reads a journal from `fd`, refusing one longer than its header can justify before reading it.
    static func load(fd: Int32, path: String) throws -> [UInt8] {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw IOError("stat", path: path, errno: errno) }
        guard st.st_size >= 0 else { throw IOError("stat", path: path, errno: EIO) }
        let head = try readUpTo(fd: fd, count: min(Int(st.st_size), headerSize), path: path)
        let header = try parseHeader(head, path: path)
        let limit = maxLength(sizeLimit: header.sizeLimit)
        guard UInt64(st.st_size) <= limit else {
            throw FormatError("write overlay journal", "file", at: 0,
                              "\(st.st_size) bytes is more than an overlay of at most \(header.sizeLimit) bytes can need (\(path))")
        }
        return try readUpTo(fd: fd, count: Int(st.st_size), path: path)
    }

    private static func readUpTo(fd: Int32, count: Int, path: String) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, $0.count - done, off_t(done)) }
            if n < 0 { if errno == EINTR { continue }; throw IOError("read", path: path, errno: errno) }
            if n == 0 { bytes.removeLast(bytes.count - done); break }
            done += n
        }
        return bytes
    }
}

extension WriteOverlay {
    /// Parses a journal's bytes as a reopen would (the fuzz harness's entry point): the number of
    /// good records and torn bytes, or the `FormatError` a reopen would throw.
    public static func checkJournal(_ bytes: [UInt8]) throws -> (records: UInt32, tornBytes: Int) {
        let r = try OverlayJournal.replay(bytes, path: "journal")
        return (r.records, r.tornBytes)
    }

    /// Parses a journal's bytes and returns the logical size it records (fuzz harness, tools).
    public static func journaledSize(_ bytes: [UInt8]) throws -> UInt64 {
        try OverlayJournal.replay(bytes, path: "journal").size
    }

    /// The logical size recorded by the overlay at `path` (its `.map` journal), without opening the
    /// base: nil when no overlay exists there yet. Front-ends report it before the first open
    /// (deferred open), so a grown file keeps its size across remounts.
    public static func recordedSize(path: String) throws -> UInt64? {
        let journalPath = path + ".map"
        let fd = open(journalPath, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw IOError("open overlay journal", path: journalPath, errno: errno)
        }
        defer { close(fd) }
        return try OverlayJournal.replay(OverlayJournal.load(fd: fd, path: journalPath), path: journalPath).size
    }
}
