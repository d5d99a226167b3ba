import BlockCore

/// The 92-byte GPT header (UEFI 2.10 §5.3.2, table 5-5), primary at LBA 1 and backup at the last
/// LBA. `parse` applies the rules one header can be judged by on its own; the rules that need the
/// disk or the other header live in `GPT.read`.
public struct GPTHeader: Sendable, Hashable {
    public static let size = 92
    /// Table 5-5, Revision: "This header is version 1.0, so the correct value is 0x00010000."
    public static let revision1_0: UInt32 = 0x0001_0000

    public var revision: UInt32 = GPTHeader.revision1_0
    public var headerSize: UInt32 = UInt32(GPTHeader.size)
    public var myLBA: UInt64
    public var alternateLBA: UInt64
    public var firstUsableLBA: UInt64
    public var lastUsableLBA: UInt64
    public var diskGUID: GUID
    public var partitionEntryLBA: UInt64
    public var entryCount: UInt32
    public var entrySize: UInt32
    public var entryArrayCRC: UInt32

    public init(myLBA: UInt64, alternateLBA: UInt64, firstUsableLBA: UInt64, lastUsableLBA: UInt64, diskGUID: GUID,
                partitionEntryLBA: UInt64, entryCount: UInt32, entrySize: UInt32, entryArrayCRC: UInt32) {
        self.myLBA = myLBA
        self.alternateLBA = alternateLBA
        self.firstUsableLBA = firstUsableLBA
        self.lastUsableLBA = lastUsableLBA
        self.diskGUID = diskGUID
        self.partitionEntryLBA = partitionEntryLBA
        self.entryCount = entryCount
        self.entrySize = entrySize
        self.entryArrayCRC = entryArrayCRC
    }

    /// Bytes of the entry array this header describes (≤ 2^32 · 2^32, so no overflow in UInt64).
    public var entryArrayBytes: UInt64 { UInt64(entryCount) * UInt64(entrySize) }

    /// One whole logical block: the 92 header bytes with their CRC, then zeros (table 5-5: "The
    /// rest of the block is reserved by UEFI and must be zero").
    public func encode(sectorSize: Int) -> [UInt8] {
        var s = [UInt8](repeating: 0, count: sectorSize)
        s.put(GPT.signature, at: 0)
        s.putLE32(revision, at: 8)
        s.putLE32(UInt32(GPTHeader.size), at: 12)  // always written as 92: the fields this type holds
        s.putLE64(myLBA, at: 24)
        s.putLE64(alternateLBA, at: 32)
        s.putLE64(firstUsableLBA, at: 40)
        s.putLE64(lastUsableLBA, at: 48)
        s.put(diskGUID.bytes, at: 56)
        s.putLE64(partitionEntryLBA, at: 72)
        s.putLE32(entryCount, at: 80)
        s.putLE32(entrySize, at: 84)
        s.putLE32(entryArrayCRC, at: 88)
        s.putLE32(CRC32.checksum(Array(s[0..<GPTHeader.size])), at: 16)
        return s
    }

    /// Largest entry array a reader allocates (4 MiB: the spec's minimum is 16 KiB, real disks
    /// use 16 KiB; 32768 entries of 128 bytes). Checked before anything is read.
    public static let maxEntryArrayBytes: UInt64 = 4 << 20
    /// Largest entry size accepted: 128 × 2^5. The spec sets no maximum; no tool writes more than 128.
    public static let maxEntrySize: UInt32 = 4096

    /// Parses the header in `sector` (one logical block read at byte `base`, which is LBA
    /// `lba`). `structure` is "header" or "backup header".
    public static func parse(_ sector: [UInt8], lba: UInt64, base: UInt64, structure: String) throws -> GPTHeader {
        func fail(_ kind: GPTError.Kind, _ field: Int, _ reason: String) -> GPTError {
            GPTError(kind, structure, at: base + UInt64(field), reason)
        }
        guard sector.count >= 512 else { throw fail(.truncated, 0, "a logical block of \(sector.count) bytes cannot hold a GPT header") }
        // §5.3.2: "Check the Signature" — table 5-5: ASCII string "EFI PART".
        guard Array(sector[0..<8]) == GPT.signature else { throw fail(.signature, 0, "no 'EFI PART' signature") }
        // Table 5-5, Revision: "version 1.0, so the correct value is 0x00010000". A later minor
        // revision keeps the 1.0 layout, so only the major half is required.
        let revision = sector.le32(8)
        guard revision >> 16 == 1 else {
            throw fail(.revision, 8, "revision 0x\(String(revision, radix: 16)) is not 1.x (0x0001xxxx)")
        }
        // Table 5-5, HeaderSize: "must be greater than or equal to 92 and must be less than or
        // equal to the logical block size".
        let headerSize = Int(sector.le32(12))
        guard headerSize >= GPTHeader.size, headerSize <= sector.count else {
            throw fail(.headerSize, 12, "header size \(headerSize) outside 92...\(sector.count) (the logical block size)")
        }
        // Table 5-5, HeaderCRC32: "computed by setting this field to 0, and computing the 32-bit
        // CRC for HeaderSize bytes" — §5.3.2: "Check the Header CRC".
        var h = Array(sector[0..<headerSize])
        let stored = h.le32(16)
        h.putLE32(0, at: 16)
        let computed = CRC32.checksum(h)
        guard computed == stored else {
            throw fail(.headerCRC, 16, "header CRC-32 mismatch (stored 0x\(hex32(stored)), computed 0x\(hex32(computed)))")
        }
        // Table 5-5, Reserved (offset 20): "Must be zero."
        guard sector.le32(20) == 0 else { throw fail(.reserved, 20, "reserved field is 0x\(hex32(sector.le32(20))), must be zero") }
        // §5.3.2: "Check that the MyLBA entry points to the LBA that contains the GUID Partition Table".
        let myLBA = sector.le64(24)
        guard myLBA == lba else { throw fail(.headerLocation, 24, "MyLBA \(myLBA) is not \(lba), where the header was read") }
        // Table 5-5, SizeOfPartitionEntry: "shall be set to a value of 128 x 2^n where n is an
        // integer greater than or equal to zero (e.g., 128, 256, 512, etc.)". Bounded above too.
        let entrySize = sector.le32(84)
        guard entrySize >= 128, entrySize <= maxEntrySize, entrySize.nonzeroBitCount == 1 else {
            throw fail(.entrySize, 84, "entry size \(entrySize) is not 128 × 2^n (128...\(maxEntrySize))")
        }
        // NumberOfPartitionEntries: bounded before the array is allocated.
        let entryCount = sector.le32(80)
        guard UInt64(entryCount) * UInt64(entrySize) <= maxEntryArrayBytes else {
            throw fail(.entryCount, 80, "\(entryCount) entries of \(entrySize) bytes exceed the \(maxEntryArrayBytes >> 20) MiB bound on the entry array")
        }
        // Table 5-5: FirstUsableLBA ≤ LastUsableLBA (+1 for an empty usable area is not useful: refuse).
        let first = sector.le64(40), last = sector.le64(48)
        guard first <= last else { throw fail(.usableRange, 40, "FirstUsableLBA \(first) after LastUsableLBA \(last)") }
        var header = GPTHeader(myLBA: myLBA, alternateLBA: sector.le64(32), firstUsableLBA: first, lastUsableLBA: last,
                               diskGUID: GUID(bytes: Array(sector[56..<72])), partitionEntryLBA: sector.le64(72),
                               entryCount: entryCount, entrySize: entrySize, entryArrayCRC: sector.le32(88))
        header.revision = revision
        header.headerSize = UInt32(headerSize)
        return header
    }
}

func hex32(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, 8 - s.count)) + s
}
