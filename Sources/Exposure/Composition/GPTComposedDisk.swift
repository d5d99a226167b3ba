import BlockCore
import DiskFormats

/// One partition of a composed GPT disk: its table entry and the block source its bytes come
/// from — the backup's volume (with its patches), or a source the composition layer
/// synthesizes (an ESP, …), never something written into the backup. A content shorter than
/// the partition reads as zeros after its end.
public struct ComposedPartition: Sendable {
    public var entry: GPT.Partition
    public var content: any BlockSource

    public init(entry: GPT.Partition, content: any BlockSource) {
        self.entry = entry
        self.content = content
    }
}

/// A whole GPT disk assembled from partitions (the "composed disk" layer for GPT): the primary
/// area (protective MBR, header, entry array) and backup area (array, header) encoded from
/// `table`, each partition's content at its first LBA, zeros everywhere else.
public struct GPTComposedDisk: BlockSource {
    public let table: GPT
    public let size: UInt64
    private let primary: [UInt8]
    private let backup: [UInt8]
    private let backupStart: UInt64
    /// Sorted by offset, non-overlapping (the table's rules).
    private let pieces: [(range: Range<UInt64>, source: any BlockSource)]

    /// `table.partitions` must be exactly the entries of `partitions` (same numbers and LBAs).
    public init(table: GPT, partitions: [ComposedPartition]) throws {
        try table.validate()
        guard table.partitions == partitions.map(\.entry).sorted(by: { $0.number < $1.number }) else {
            throw FormatError("composition", "GPT", at: 0, "the table's entries differ from the composed partitions")
        }
        let ss = UInt64(table.sectorSize)
        var pieces: [(Range<UInt64>, any BlockSource)] = []
        for p in partitions.sorted(by: { $0.entry.firstLBA < $1.entry.firstLBA }) {
            let bytes = p.entry.sectorCount * ss
            guard p.content.size <= bytes else {
                throw FormatError("composition", "partition \(p.entry.number)", at: p.entry.firstLBA * ss,
                                  "content of \(p.content.size) bytes does not fit \(p.entry.sectorCount) blocks of \(ss) bytes")
            }
            let start = p.entry.firstLBA * ss
            if p.content.size > 0 { pieces.append((start..<(start + p.content.size), p.content)) }
        }
        self.table = table
        self.size = table.diskBytes
        self.primary = table.encodePrimaryArea()
        self.backup = table.encodeBackupArea()
        self.backupStart = table.backupArea.lowerBound
        self.pieces = pieces
    }

    /// Every region of the disk in order: the two table areas, the partitions' contents, and
    /// the zero gaps between them.
    private enum Region { case bytes([UInt8], UInt64), source(any BlockSource, UInt64), zero }

    private func regions(in r: Range<UInt64>) -> [(Range<UInt64>, Region)] {
        var all: [(Range<UInt64>, Region)] = [(0..<UInt64(primary.count), .bytes(primary, 0))]
        for p in pieces { all.append((p.range, .source(p.source, p.range.lowerBound))) }
        all.append((backupStart..<size, .bytes(backup, backupStart)))
        var out: [(Range<UInt64>, Region)] = []
        var pos = r.lowerBound
        for (range, region) in all where range.upperBound > pos && range.lowerBound < r.upperBound {
            if range.lowerBound > pos { out.append((pos..<range.lowerBound, .zero)) }
            let piece = max(range.lowerBound, pos)..<min(range.upperBound, r.upperBound)
            out.append((piece, region))
            pos = piece.upperBound
        }
        if pos < r.upperBound { out.append((pos..<r.upperBound, .zero)) }
        return out
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        for (range, region) in regions(in: offset..<(offset + UInt64(buffer.count))) {
            let out = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(range.lowerBound - offset)..<Int(range.upperBound - offset)])
            switch region {
            case let .bytes(b, base):
                b.withUnsafeBytes { out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(range.lowerBound - base)..<Int(range.upperBound - base)])) }
            case let .source(s, base):
                try s.read(at: range.lowerBound - base, into: out)
            case .zero:
                out.initializeMemory(as: UInt8.self, repeating: 0)
            }
        }
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out: [Extent] = []
        for (piece, region) in regions(in: r) {
            switch region {
            case .bytes: out.append(Extent(offset: piece.lowerBound, length: UInt64(piece.count), kind: .data))
            case .zero: out.append(Extent(offset: piece.lowerBound, length: UInt64(piece.count), kind: .zero))
            case let .source(s, base):
                for e in try s.extents(in: (piece.lowerBound - base)..<(piece.upperBound - base)) {
                    out.append(Extent(offset: e.offset + base, length: e.length, kind: e.kind))
                }
            }
        }
        return coalesce(out)
    }
}
