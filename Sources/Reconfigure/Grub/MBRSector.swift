import BlockCore

/// The parts of a disk's sector 0 (a classic MBR) that boot-code regeneration needs: the boot
/// code area, the disk signature/partition table/boot signature that must be kept, and the four
/// primary entries (start LBA bounds the gap GRUB's core image lives in).
public struct MBRSector: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        /// 1-based, as GRUB (`msdosN`) and Linux (`sdaN`) number primary partitions.
        public var number: Int
        public var type: UInt8
        public var bootable: Bool
        public var startLBA: UInt64
        public var sectors: UInt64
    }

    public static let size = 512
    /// Boot code ends here; 440–445 are the disk signature and a reserved word (UEFI spec 5.2.1).
    public static let codeSize = 440
    public static let tableOffset = 0x1BE

    public let bytes: [UInt8]
    /// Non-empty primary entries, in table order.
    public let entries: [Entry]

    public init(_ sector: [UInt8]) throws {
        guard sector.count >= MBRSector.size else {
            throw FormatError("MBR", "sector 0", at: 0, "\(sector.count) bytes, need \(MBRSector.size)")
        }
        let s = Array(sector.prefix(MBRSector.size))
        guard s[510] == 0x55, s[511] == 0xAA else {
            throw FormatError("MBR", "boot signature", at: 510, String(format: "%02x%02x, expected 55aa", s[510], s[511]))
        }
        var entries: [Entry] = []
        for i in 0..<4 {
            let o = MBRSector.tableOffset + 16 * i
            let status = s[o], type = s[o + 4]
            let start = UInt64(s.le32(o + 8)), count = UInt64(s.le32(o + 12))
            guard type != 0, count != 0 else { continue }
            guard status == 0 || status == 0x80 else {
                throw FormatError("MBR", "partition entry \(i + 1)", at: UInt64(o), String(format: "status 0x%02x is neither 0x00 nor 0x80", status))
            }
            guard start != 0 else {
                throw FormatError("MBR", "partition entry \(i + 1)", at: UInt64(o + 8), "starts at LBA 0, over the MBR itself")
            }
            entries.append(Entry(number: i + 1, type: type, bootable: status == 0x80, startLBA: start, sectors: count))
        }
        bytes = s
        self.entries = entries
    }

    /// The first sector any partition uses: everything from LBA 1 up to it is the boot gap.
    public var gapEndLBA: UInt64 { entries.map(\.startLBA).min() ?? 0 }

    /// The primary entry that starts at `lba`.
    public func entry(startingAt lba: UInt64) -> Entry? { entries.first { $0.startLBA == lba } }
}
