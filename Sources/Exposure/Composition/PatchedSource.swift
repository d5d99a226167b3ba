import BlockCore

/// A base block source with a few byte ranges replaced — how small, computed edits (a patched
/// boot sector's hidden-sectors field) reach the guest without ever touching the backup.
public struct PatchedSource: BlockSource {
    public struct Patch: Sendable, Equatable, Codable {
        public var offset: UInt64
        public var bytes: [UInt8]
        public init(offset: UInt64, bytes: [UInt8]) { self.offset = offset; self.bytes = bytes }
        public var end: UInt64 { offset + UInt64(bytes.count) }
    }

    public let base: any BlockSource
    /// Sorted by offset, non-overlapping.
    public let patches: [Patch]

    public init(base: any BlockSource, patches: [Patch]) throws {
        let sorted = patches.filter { !$0.bytes.isEmpty }.sorted { $0.offset < $1.offset }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.end > b.offset {
            throw FormatError("composition", "patch at \(b.offset)", at: b.offset, "overlaps the patch at \(a.offset)")
        }
        if let last = sorted.last, last.end > base.size {
            throw FormatError("composition", "patch at \(last.offset)", at: last.offset, "extends past the end of the base (\(base.size) bytes)")
        }
        self.base = base
        self.patches = sorted
    }

    public var size: UInt64 { base.size }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        try base.read(at: offset, into: buffer)
        let end = offset + UInt64(buffer.count)
        for p in patches where p.offset < end && p.end > offset {
            let from = max(p.offset, offset), to = min(p.end, end)
            p.bytes.withUnsafeBytes { src in
                let s = UnsafeRawBufferPointer(rebasing: src[Int(from - p.offset)..<Int(to - p.offset)])
                UnsafeMutableRawBufferPointer(rebasing: buffer[Int(from - offset)..<Int(to - offset)]).copyMemory(from: s)
            }
        }
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        var out: [Extent] = []
        for e in try base.extents(in: range) {
            // A patched range reads as data whatever the base says.
            var pos = e.offset
            for p in patches where p.offset < e.end && p.end > e.offset && e.kind != .data {
                let from = max(p.offset, e.offset), to = min(p.end, e.end)
                if from > pos { out.append(Extent(offset: pos, length: from - pos, kind: e.kind)) }
                out.append(Extent(offset: from, length: to - from, kind: .data))
                pos = to
            }
            if pos < e.end { out.append(Extent(offset: pos, length: e.end - pos, kind: e.kind)) }
        }
        return coalesce(out)
    }
}
