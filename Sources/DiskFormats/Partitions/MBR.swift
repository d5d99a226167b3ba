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

    /// Parses sector 0. Throws when the 0x55AA signature is missing or an entry is malformed
    /// (boot indicator other than 0x00/0x80, or an LBA range that wraps past 2^32).
    public static func parse(_ sector: [UInt8], base: UInt64 = 0) throws -> MBR {
        let v = ByteView(sector, base: base, format: "MBR", structure: "sector 0")
        guard v.count >= MBR.size else { throw v.error(at: v.count, "truncated: \(v.count) of 512 bytes") }
        guard try v.u8(0x1FE) == 0x55, try v.u8(0x1FF) == 0xAA else {
            throw v.error(at: 0x1FE, "no 0x55AA boot signature")
        }
        var parts: [Partition?] = []
        for i in 0..<4 {
            let o = MBR.tableOffset + 16 * i
            let status = try v.u8(o)
            let type = try v.u8(o + 4)
            let start = try v.u32(o + 8)
            let count = try v.u32(o + 12)
            guard status == 0 || status == 0x80 else {
                throw FormatError("MBR", "partition entry \(i + 1)", at: base + UInt64(o),
                                  "boot indicator 0x\(String(status, radix: 16)) is neither 0x00 nor 0x80")
            }
            if type == 0 || count == 0 { parts.append(nil); continue }
            guard UInt64(start) + UInt64(count) <= UInt64(UInt32.max) + 1 else {
                throw FormatError("MBR", "partition entry \(i + 1)", at: base + UInt64(o + 8),
                                  "start \(start) + count \(count) wraps past 2^32 sectors")
            }
            parts.append(Partition(type: type, bootable: status == 0x80, startLBA: start, sectorCount: count))
        }
        return MBR(bootCode: Array(sector[0..<MBR.bootCodeSize]), diskSignature: sector.le32(0x1B8), partitions: parts)
    }
}
