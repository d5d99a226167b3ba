import BlockCore
#if canImport(Glibc)
import Glibc
#endif

/// The write overlay's map journal: an append-only file saying which units of the data file hold
/// written bytes. Documented in docs/frontends.md ("Write overlay"); all integers little-endian.
///
/// Header (64 bytes): magic `BLOVMAP1`, version u32 = 1, unit size u32, virtual size u64,
/// base identity (32 bytes, e.g. the backup's header digest; zeros when unknown), reserved u32,
/// CRC-32C of bytes 0..<60 at 60.
/// Record (32 bytes): magic u32 `OVRC`, kind u32 (1 = units now hold data), first unit u64,
/// unit count u64, sequence u32 (the record's index), CRC-32C of bytes 0..<28 at 28.
enum OverlayJournal {
    static let magic: [UInt8] = Array("BLOVMAP1".utf8)
    static let version: UInt32 = 1
    static let headerSize = 64
    static let recordSize = 32
    static let recordMagic: UInt32 = 0x4352_564F // "OVRC"
    static let kindPresent: UInt32 = 1

    struct Header: Equatable {
        var unitSize: UInt32
        var virtualSize: UInt64
        var baseIdentity: [UInt8]
    }

    static func encode(_ h: Header) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: headerSize)
        b.replaceSubrange(0..<8, with: magic)
        b.putLE32(version, at: 8)
        b.putLE32(h.unitSize, at: 12)
        b.putLE64(h.virtualSize, at: 16)
        b.replaceSubrange(24..<56, with: h.baseIdentity.prefix(32) + [UInt8](repeating: 0, count: max(0, 32 - h.baseIdentity.count)))
        b.putLE32(CRC32C.checksum(Array(b[0..<60])), at: 60)
        return b
    }

    static func encodeRecord(first: UInt64, count: UInt64, sequence: UInt32) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: recordSize)
        b.putLE32(recordMagic, at: 0)
        b.putLE32(kindPresent, at: 4)
        b.putLE64(first, at: 8)
        b.putLE64(count, at: 16)
        b.putLE32(sequence, at: 24)
        b.putLE32(CRC32C.checksum(Array(b[0..<28])), at: 28)
        return b
    }

    struct Replay {
        var header: Header
        var present = UnitRangeSet()
        var records: UInt32 = 0
        /// Bytes after the last good record that were dropped (a record torn by a crash).
        var tornBytes: Int = 0
        /// Length of the journal up to and including the last good record.
        var validLength: Int
    }

    /// Parses a whole journal. Every field is bounded: a record must name units inside the disk
    /// and units not already present (the writer only journals newly written units), so a valid
    /// journal never holds more records than the disk has units.
    static func replay(_ bytes: [UInt8], path: String) throws -> Replay {
        func fail(_ structure: String, _ at: Int, _ why: String) -> FormatError {
            FormatError("write overlay journal", structure, at: UInt64(at), "\(why) (\(path))")
        }
        guard bytes.count >= headerSize else { throw fail("header", 0, "journal is \(bytes.count) bytes, shorter than its header") }
        guard Array(bytes[0..<8]) == magic else { throw fail("header", 0, "bad magic") }
        guard CRC32C.checksum(Array(bytes[0..<60])) == bytes.le32(60) else { throw fail("header", 60, "CRC-32C mismatch") }
        guard bytes.le32(8) == version else { throw fail("header", 8, "unsupported version \(bytes.le32(8))") }
        let unitSize = bytes.le32(12)
        guard unitSize >= 512, unitSize <= 1 << 24, unitSize & (unitSize - 1) == 0 else {
            throw fail("header", 12, "unit size \(unitSize) is not a power of two in 512...16 MiB")
        }
        let virtualSize = bytes.le64(16)
        let header = Header(unitSize: unitSize, virtualSize: virtualSize, baseIdentity: Array(bytes[24..<56]))
        let unitCount = (virtualSize + UInt64(unitSize) - 1) / UInt64(unitSize)
        var r = Replay(header: header, validLength: headerSize)
        var pos = headerSize
        while pos + recordSize <= bytes.count {
            let rec = Array(bytes[pos..<pos + recordSize])
            let isLast = pos + 2 * recordSize > bytes.count
            guard CRC32C.checksum(Array(rec[0..<28])) == rec.le32(28), rec.le32(0) == recordMagic else {
                // A crash can only tear the final append; damage before it is corruption.
                if isLast { break }
                throw fail("record \(r.records)", pos, "CRC-32C mismatch before the end of the journal")
            }
            guard rec.le32(4) == kindPresent else { throw fail("record \(r.records)", pos + 4, "unknown kind \(rec.le32(4))") }
            guard rec.le32(24) == r.records else {
                throw fail("record \(r.records)", pos + 24, "sequence \(rec.le32(24)), expected \(r.records)")
            }
            let first = rec.le64(8), count = rec.le64(16)
            guard count > 0, first < unitCount, count <= unitCount - first else {
                throw fail("record \(r.records)", pos + 8, "units \(first)+\(count) outside the disk's \(unitCount) units")
            }
            guard r.present.missing(in: first..<first + count) == [first..<first + count] else {
                throw fail("record \(r.records)", pos + 8, "units \(first)+\(count) were already journaled")
            }
            r.present.insert(first..<first + count)
            r.records += 1
            pos += recordSize
            r.validLength = pos
        }
        r.tornBytes = bytes.count - r.validLength
        return r
    }
}

extension WriteOverlay {
    /// Parses a journal's bytes as a reopen would (the fuzz harness's entry point): the number of
    /// good records and torn bytes, or the `FormatError` a reopen would throw.
    public static func checkJournal(_ bytes: [UInt8]) throws -> (records: UInt32, tornBytes: Int) {
        let r = try OverlayJournal.replay(bytes, path: "journal")
        return (r.records, r.tornBytes)
    }
}
