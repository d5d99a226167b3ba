import BlockCore

/// What a disk image's partition table says, reduced to what backups and exposure need: the
/// scheme, the disk's identity (MBR signature or GPT disk GUID) and the partitions by number.
public struct PartitionTable: Sendable, Hashable {
    public enum Scheme: String, Sendable, Hashable, Codable {
        case mbr, gpt
    }

    /// One partition, independent of scheme.
    public struct Entry: Sendable, Hashable {
        /// 1-based: MBR slot 1–4, or GPT entry-array index.
        public var number: Int
        public var startLBA: UInt64
        public var sectorCount: UInt64
        /// MBR type byte (0 for GPT).
        public var mbrType: UInt8
        public var bootable: Bool
        public var gptType: GUID?
        public var gptUniqueGUID: GUID?
    }

    public var scheme: Scheme
    public var sectorSize: Int
    public var mbr: MBR?
    public var gpt: GPT?
    public var entries: [Entry]

    public var diskSignature: UInt32 { mbr?.diskSignature ?? 0 }
    public var diskGUID: GUID? { gpt?.diskGUID }

    public func entry(number: Int) -> Entry? { entries.first { $0.number == number } }

    /// Reads the table of `disk`: GPT when sector 0 holds a protective MBR (tried with 512- and
    /// 4096-byte sectors, the one with a header signature at LBA 1 first; `GPT.read` applies UEFI
    /// §5.3's rules), MBR otherwise. Partitions past the end of the disk are an error.
    public static func read(from disk: some BlockSource) throws -> PartitionTable {
        guard disk.size >= 512 else {
            throw FormatError("MBR", "sector 0", at: 0, "disk of \(disk.size) bytes is smaller than one sector")
        }
        let mbr = try MBR.parse(try disk.read(at: 0, count: 512))
        if mbr.isProtective {
            var firstError: Error?
            // The sector size whose LBA 1 holds a header signature is tried first, so a damaged
            // table is reported with that reading's error, not "no signature" from the other.
            func signed(_ ss: Int) -> Bool {
                disk.size >= UInt64(2 * ss) && (try? disk.read(at: UInt64(ss), count: 8)) == GPT.signature
            }
            for ss in signed(4096) && !signed(512) ? [4096, 512] : [512, 4096] {
                do {
                    let g = try GPT.read(from: disk, sectorSize: ss)
                    let entries = try g.partitions.map { p -> Entry in
                        try checkInside(disk, p.firstLBA, p.sectorCount, ss, "GPT", "partition entry \(p.number)")
                        return Entry(number: p.number, startLBA: p.firstLBA, sectorCount: p.sectorCount, mbrType: 0,
                                     bootable: p.legacyBootable, gptType: p.typeGUID, gptUniqueGUID: p.uniqueGUID)
                    }
                    return PartitionTable(scheme: .gpt, sectorSize: ss, mbr: mbr, gpt: g, entries: entries)
                } catch { if firstError == nil { firstError = error } }
            }
            throw firstError!
        }
        var entries: [Entry] = []
        for (i, p) in mbr.partitions.enumerated() {
            guard let p else { continue }
            try checkInside(disk, UInt64(p.startLBA), UInt64(p.sectorCount), 512, "MBR", "partition entry \(i + 1)")
            entries.append(Entry(number: i + 1, startLBA: UInt64(p.startLBA), sectorCount: UInt64(p.sectorCount),
                                 mbrType: p.type, bootable: p.bootable, gptType: nil, gptUniqueGUID: nil))
        }
        return PartitionTable(scheme: .mbr, sectorSize: 512, mbr: mbr, gpt: nil, entries: entries)
    }

    private static func checkInside(_ disk: some BlockSource, _ start: UInt64, _ count: UInt64, _ ss: Int,
                                    _ format: String, _ what: String) throws {
        let (end, o1) = start.addingReportingOverflow(count)
        let (bytes, o2) = end.multipliedReportingOverflow(by: UInt64(ss))
        guard !o1, !o2, bytes <= disk.size else {
            throw FormatError(format, what, at: 0, "sectors \(start)+\(count) extend past the end of the disk (\(disk.size) bytes)")
        }
    }
}

/// A byte range of another block source (one partition of a disk image) as a block source.
public struct PartitionSlice: BlockSource {
    public let base: any BlockSource
    public let offset: UInt64
    public let size: UInt64

    public init(_ base: any BlockSource, offset: UInt64, length: UInt64) throws {
        let (end, o) = offset.addingReportingOverflow(length)
        guard !o, end <= base.size else {
            throw BlockSourceError.outOfRange(offset: offset, length: length, size: base.size)
        }
        self.base = base
        self.offset = offset
        self.size = length
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        try base.read(at: self.offset + offset, into: buffer)
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        return try base.extents(in: (r.lowerBound + offset)..<(r.upperBound + offset)).map {
            Extent(offset: $0.offset - offset, length: $0.length, kind: $0.kind)
        }
    }
}
