import BlockCore

/// A GUID Partition Table as read from a disk (UEFI 2.10 §5.3): the header at LBA 1 (or the
/// backup header at the last LBA when the primary is damaged) and its partition entry array.
public struct GPT: Sendable, Hashable {
    public struct Partition: Sendable, Hashable {
        /// 1-based index in the entry array (what `--partition N` names).
        public var number: Int
        public var typeGUID: GUID
        public var uniqueGUID: GUID
        public var firstLBA: UInt64
        /// Inclusive, as stored.
        public var lastLBA: UInt64
        public var attributes: UInt64
        public var name: String

        public var sectorCount: UInt64 { lastLBA - firstLBA + 1 }
        /// Legacy BIOS bootable attribute (bit 2, UEFI 2.10 table 5.7).
        public var legacyBootable: Bool { attributes & 4 != 0 }
    }

    public var sectorSize: Int
    public var diskGUID: GUID
    public var firstUsableLBA: UInt64
    public var lastUsableLBA: UInt64
    public var partitions: [Partition]
    /// True when the primary header was damaged and the backup header was used.
    public var usedBackupHeader: Bool

    public static let signature = Array("EFI PART".utf8)
    /// Bound on the entry array we are willing to read (the spec's minimum is 16 KiB; real disks
    /// never exceed a few hundred KiB).
    static let maxEntryArrayBytes = 4 << 20

    /// Reads the GPT of `disk` with the given logical sector size.
    public static func read(from disk: some BlockSource, sectorSize: Int = 512) throws -> GPT {
        do {
            return try readHeader(from: disk, lba: 1, sectorSize: sectorSize, backup: false)
        } catch let primary as FormatError {
            let sectors = disk.size / UInt64(sectorSize)
            guard sectors > 2 else { throw primary }
            if let g = try? readHeader(from: disk, lba: sectors - 1, sectorSize: sectorSize, backup: true) { return g }
            throw primary
        }
    }

    private static func readHeader(from disk: some BlockSource, lba: UInt64, sectorSize: Int, backup: Bool) throws -> GPT {
        let where_ = lba * UInt64(sectorSize)
        let name = backup ? "backup header" : "header"
        guard where_ + UInt64(sectorSize) <= disk.size else {
            throw FormatError("GPT", name, at: where_, "past the end of the disk (\(disk.size) bytes)")
        }
        let sector = try disk.read(at: where_, count: sectorSize)
        let v = ByteView(sector, base: where_, format: "GPT", structure: name)
        guard try v.slice(0, 8) == signature else { throw v.error(at: 0, "no 'EFI PART' signature") }
        let headerSize = Int(try v.u32(12))
        guard headerSize >= 92, headerSize <= sectorSize else { throw v.error(at: 12, "header size \(headerSize) outside 92...\(sectorSize)") }
        var h = Array(sector[0..<headerSize])
        let stored = h.le32(16)
        h.putLE32(0, at: 16)
        guard CRC32.checksum(h) == stored else { throw v.error(at: 16, "header CRC-32 mismatch") }
        let myLBA = try v.u64(24)
        guard myLBA == lba else { throw v.error(at: 24, "MyLBA \(myLBA) is not \(lba)") }
        let firstUsable = try v.u64(40), lastUsable = try v.u64(48)
        let diskGUID = GUID(bytes: try v.slice(56, 16))
        let entriesLBA = try v.u64(72)
        let count = Int(try v.u32(80)), entrySize = Int(try v.u32(84))
        let arrayCRC = try v.u32(88)
        guard entrySize >= 128, entrySize % 8 == 0, entrySize <= 4096 else { throw v.error(at: 84, "entry size \(entrySize) invalid") }
        guard count <= maxEntryArrayBytes / entrySize else { throw v.error(at: 80, "\(count) entries exceed the 4 MiB bound") }
        let arrayBytes = count * entrySize
        let (arrayStart, ovf) = entriesLBA.multipliedReportingOverflow(by: UInt64(sectorSize))
        guard !ovf, arrayStart <= disk.size, disk.size - arrayStart >= UInt64(arrayBytes) else {
            throw v.error(at: 72, "entry array at LBA \(entriesLBA) (\(arrayBytes) bytes) past the end of the disk")
        }
        let array = try disk.read(at: arrayStart, count: arrayBytes)
        guard CRC32.checksum(array) == arrayCRC else {
            throw FormatError("GPT", "partition entry array", at: arrayStart, "CRC-32 mismatch")
        }
        var parts: [Partition] = []
        for i in 0..<count {
            let o = i * entrySize
            let type = GUID(bytes: Array(array[o..<o + 16]))
            if type.isZero { continue }
            let first = array.le64(o + 32), last = array.le64(o + 40)
            guard first <= last else {
                throw FormatError("GPT", "partition entry \(i + 1)", at: arrayStart + UInt64(o + 32), "first LBA \(first) after last LBA \(last)")
            }
            var units: [UInt16] = []
            for k in stride(from: 56, to: 128, by: 2) {
                let u = array.le16(o + k)
                if u == 0 { break }
                units.append(u)
            }
            parts.append(Partition(number: i + 1, typeGUID: type, uniqueGUID: GUID(bytes: Array(array[o + 16..<o + 32])),
                                   firstLBA: first, lastLBA: last, attributes: array.le64(o + 48),
                                   name: String(decoding: units, as: UTF16.self)))
        }
        return GPT(sectorSize: sectorSize, diskGUID: diskGUID, firstUsableLBA: firstUsable, lastUsableLBA: lastUsable,
                   partitions: parts, usedBackupHeader: backup)
    }
}
