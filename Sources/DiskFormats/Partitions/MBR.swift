import BlockCore

/// A classic Master Boot Record (sector 0 of a BIOS disk): 440 bytes of boot code, the 32-bit disk
/// signature at 0x1B8, two reserved bytes, four 16-byte partition entries at 0x1BE and the 0x55AA
/// signature at 0x1FE. A small value type so the exposure layer can synthesize one for a
/// volume-only backup and parsers can read one.
public struct MBR: Sendable, Hashable {
    public static let size = 512
    public static let bootCodeSize = 440
    public static let tableOffset = 0x1BE

    /// One primary partition entry. CHS fields are not stored: they are computed from the LBA
    /// fields on encode (the classic 255-head, 63-sector translation) and ignored on parse, as every
    /// modern system does.
    public struct Partition: Sendable, Hashable {
        public var type: UInt8
        public var bootable: Bool
        public var startLBA: UInt32
        public var sectorCount: UInt32

        public init(type: UInt8, bootable: Bool = false, startLBA: UInt32, sectorCount: UInt32) {
            self.type = type
            self.bootable = bootable
            self.startLBA = startLBA
            self.sectorCount = sectorCount
        }

        public var isEmpty: Bool { type == 0 || sectorCount == 0 }
        public var endLBA: UInt64 { UInt64(startLBA) + UInt64(sectorCount) }
        /// The boot-indicator byte as stored (0x80 active, 0x00 inactive).
        public var bootIndicator: UInt8 { bootable ? 0x80 : 0x00 }
    }

    /// 440 bytes of boot code.
    public var bootCode: [UInt8]
    public var diskSignature: UInt32
    /// Four entries; empty slots are `nil`.
    public var partitions: [Partition?]

    public init(bootCode: [UInt8] = [UInt8](repeating: 0, count: MBR.bootCodeSize),
                diskSignature: UInt32 = 0, partitions: [Partition?] = []) {
        precondition(bootCode.count <= MBR.bootCodeSize, "MBR boot code is at most 440 bytes")
        precondition(partitions.count <= 4, "an MBR holds four primary partitions")
        self.bootCode = bootCode + [UInt8](repeating: 0, count: MBR.bootCodeSize - bootCode.count)
        self.diskSignature = diskSignature
        self.partitions = partitions + [Partition?](repeating: nil, count: 4 - partitions.count)
    }

    /// True when the table holds a protective (0xEE) entry: the disk is GPT (UEFI 2.10 §5.2.3).
    public var isProtective: Bool { partitions.contains { $0?.type == 0xEE } }

    /// The CHS triple for an LBA under the 255/63 translation, saturating at 1023/254/63 for LBAs
    /// beyond the 8 GiB CHS limit, encoded as the three stored bytes (head, sector|cyl-high, cyl-low).
    public static func chsBytes(forLBA lba: UInt64) -> [UInt8] {
        let heads: UInt64 = 255, sectors: UInt64 = 63
        let cylinder = lba / (heads * sectors)
        if cylinder > 1023 { return [0xFE, 0xFF, 0xFF] }
        let head = (lba / sectors) % heads
        let sector = lba % sectors + 1
        return [UInt8(head), UInt8(sector | ((cylinder >> 2) & 0xC0)), UInt8(cylinder & 0xFF)]
    }

    /// The 512 bytes of the sector.
    public func encode() -> [UInt8] {
        var s = [UInt8](repeating: 0, count: MBR.size)
        s.put(bootCode, at: 0)
        s.putLE32(diskSignature, at: 0x1B8)
        for (i, p) in partitions.enumerated() {
            guard let p, !p.isEmpty else { continue }
            let o = MBR.tableOffset + 16 * i
            s[o] = p.bootIndicator
            s.put(MBR.chsBytes(forLBA: UInt64(p.startLBA)), at: o + 1)
            s[o + 4] = p.type
            s.put(MBR.chsBytes(forLBA: p.endLBA == 0 ? 0 : p.endLBA - 1), at: o + 5)
            s.putLE32(p.startLBA, at: o + 8)
            s.putLE32(p.sectorCount, at: o + 12)
        }
        s[0x1FE] = 0x55
        s[0x1FF] = 0xAA
        return s
    }

    /// Non-empty entries with their 1-based slot numbers, in table order: GRUB's `msdosN` and
    /// Linux's `sdaN` number primary partitions by slot, so an empty slot 1 leaves number 1 unused.
    public var numberedPartitions: [(number: Int, partition: Partition)] {
        partitions.enumerated().compactMap { i, p in p.map { (i + 1, $0) } }
    }

    /// The entry that starts at `lba`, with its slot number.
    public func partition(startingAt lba: UInt64) -> (number: Int, partition: Partition)? {
        numberedPartitions.first { UInt64($0.partition.startLBA) == lba }
    }

    /// The lowest start LBA of any partition (nil for an empty table): sectors 1 ..< it are the
    /// gap before the first partition, where BIOS boot loaders such as GRUB embed their core.
    public var firstPartitionLBA: UInt64? { partitions.compactMap { $0.map { UInt64($0.startLBA) } }.min() }

    /// Parses sector 0 (the one MBR parser of the product). Throws a `FormatError` naming the
    /// entry, its offset and the reason when:
    /// - the sector is shorter than 512 bytes, or bytes 510–511 are not 0x55 0xAA;
    /// - any of the four boot indicators, in an empty entry too, is other than 0x00/0x80;
    /// - a non-empty entry starts at LBA 0, or its LBA range wraps past 2^32 sectors.
    public static func parse(_ sector: [UInt8], base: UInt64 = 0) throws -> MBR {
        let stored = try StoredSector(sector, base: base)
        guard stored.bootSignature == [0x55, 0xAA] else {
            throw FormatError("MBR", "sector 0", at: base + 0x1FE, "no 0x55AA boot signature")
        }
        var parts: [Partition?] = []
        for (i, e) in stored.entries.enumerated() {
            let at = base + UInt64(MBR.tableOffset + 16 * i)
            // Entry byte 0 is the boot indicator: 0x80 active, 0x00 inactive (MBR layout, UEFI
            // 2.10 §5.2.1 table 5-2). Checked in all four entries, empty ones included, because
            // that is how Linux (block/partitions/msdos.c) and GRUB (partmap/msdos.c, "bad boot
            // flag") tell a partition table from a FAT/NTFS boot sector, which also ends in
            // 0x55AA: a sector they do not take as partitioned must not be one for us either.
            guard e.hasValidBootIndicator else {
                throw FormatError("MBR", "partition entry \(i + 1)", at: at,
                                  "boot indicator 0x\(String(e.status, radix: 16)) is neither 0x00 nor 0x80")
            }
            // Type 0x00 marks an unused slot; a slot with no sectors holds nothing either.
            if e.type == 0 || e.sectorCount == 0 { parts.append(nil); continue }
            // LBA 0 is the MBR itself: a partition starting there would overlap the boot code
            // and the table, and leave no gap before it (GRUB would embed its core into the
            // partition). No partitioning tool writes one; refuse it rather than describe it.
            guard e.startLBA != 0 else {
                throw FormatError("MBR", "partition entry \(i + 1)", at: at + 8, "starts at LBA 0, over the MBR itself")
            }
            // Start and count are 32-bit sector numbers: the end must still be addressable.
            guard UInt64(e.startLBA) + UInt64(e.sectorCount) <= UInt64(UInt32.max) + 1 else {
                throw FormatError("MBR", "partition entry \(i + 1)", at: at + 8,
                                  "start \(e.startLBA) + count \(e.sectorCount) wraps past 2^32 sectors")
            }
            parts.append(Partition(type: e.type, bootable: e.status == 0x80, startLBA: e.startLBA, sectorCount: e.sectorCount))
        }
        return MBR(bootCode: stored.bootCode, diskSignature: stored.diskSignature, partitions: parts)
    }
}

extension MBR {
    /// A cylinder/head/sector address as an entry stores it: head in byte 0, sector in bits 0–5
    /// of byte 1, cylinder in bits 6–7 of byte 1 (high) and byte 2 (low).
    public struct CHS: Sendable, Hashable {
        public var cylinder: Int
        public var head: Int
        public var sector: Int

        public init(stored b: ArraySlice<UInt8>) {
            let i = b.startIndex
            head = Int(b[i])
            sector = Int(b[i + 1] & 0x3F)
            cylinder = Int(b[i + 2]) | Int(b[i + 1] & 0xC0) << 2
        }
    }

    /// One 16-byte partition entry exactly as stored, decoded but not judged: what describes a
    /// sector (layout dumps, diagnostics) reads, and what `parse` validates.
    public struct StoredEntry: Sendable, Hashable {
        public var status: UInt8
        public var firstCHS: CHS
        public var type: UInt8
        public var lastCHS: CHS
        public var startLBA: UInt32
        public var sectorCount: UInt32
        /// All 16 bytes zero: the slot was never written.
        public var isBlank: Bool

        public var hasValidBootIndicator: Bool { status == 0x00 || status == 0x80 }
    }

    /// Sector 0 split into its fields, as stored, with no rule applied beyond its length.
    public struct StoredSector: Sendable, Hashable {
        /// Bytes 0–439.
        public var bootCode: [UInt8]
        /// Bytes 440–443.
        public var diskSignature: UInt32
        /// Four entries at 446, 462, 478, 494.
        public var entries: [StoredEntry]
        /// Bytes 510–511 (0x55 0xAA on a valid MBR).
        public var bootSignature: [UInt8]

        public init(_ sector: [UInt8], base: UInt64 = 0) throws {
            guard sector.count >= MBR.size else {
                throw FormatError("MBR", "sector 0", at: base, "truncated: \(sector.count) of \(MBR.size) bytes")
            }
            bootCode = Array(sector[0..<MBR.bootCodeSize])
            diskSignature = sector.le32(MBR.bootCodeSize)
            entries = (0..<4).map { i in
                let o = MBR.tableOffset + 16 * i
                return StoredEntry(status: sector[o], firstCHS: CHS(stored: sector[(o + 1)..<(o + 4)]), type: sector[o + 4],
                                   lastCHS: CHS(stored: sector[(o + 5)..<(o + 8)]), startLBA: sector.le32(o + 8),
                                   sectorCount: sector.le32(o + 12), isBlank: sector[o..<(o + 16)].allSatisfy { $0 == 0 })
            }
            bootSignature = Array(sector[0x1FE..<0x200])
        }
    }
}
