import BlockCore

/// Finds the active log sequence exactly as MS-VHDX §2.3.3 describes it [SPEC:497-524]
/// (vhdx-notes §6), unlike QEMU, which ignores `Tail` and picks by the first entry.
public enum VHDXLogReplay {
    /// The entries of the active sequence, tail first, or a FormatError when the header names a
    /// log (LogGuid ≠ 0) but no valid sequence exists, or the file was truncated.
    public static func activeSequence(source: any BlockSource, header: VHDXHeader) throws -> [VHDXLogEntry] {
        let logOffset = header.logOffset
        let logLength = header.logLength
        let sector = UInt32(VHDX.logSectorSize)
        guard logLength >= sector else {
            throw FormatError(VHDX.formatName, "header log", at: logOffset, "log GUID is set but the log length is \(logLength)")
        }
        let (logEnd, overflow) = logOffset.addingReportingOverflow(UInt64(logLength))
        guard !overflow, logEnd <= source.size else {
            throw FormatError(VHDX.formatName, "log", at: logOffset,
                              "log 0x\(String(logOffset, radix: 16))+0x\(String(logLength, radix: 16)) extends past end of file (0x\(String(source.size, radix: 16)))")
        }
        func readRing(_ pos: UInt32, _ count: Int) throws -> [UInt8] {
            // Entries may wrap at the end of the ring.
            var out: [UInt8] = []
            out.reserveCapacity(count)
            var p = pos, left = count
            while left > 0 {
                let n = min(left, Int(logLength - p))
                out += try source.read(at: logOffset + UInt64(p), count: n)
                left -= n
                p = (p + UInt32(n)) % logLength
            }
            return out
        }
        // 1. Every 4 KiB position of the ring, the valid entries.
        var valid: [UInt32: (entry: VHDXLogEntry, length: UInt32)] = [:]
        var pos: UInt32 = 0
        while pos < logLength {
            let first = try source.read(at: logOffset + UInt64(pos), count: 4)
            if first == VHDX.logEntrySignature,
               let e = try? VHDXLogEntry.parse(position: pos, logLength: logLength, logGuid: header.logGuid,
                                               fileOffset: logOffset + UInt64(pos), readRing: readRing) {
                valid[pos] = e
            }
            pos += sector
        }
        func successor(_ p: UInt32) -> UInt32? {
            guard let e = valid[p] else { return nil }
            let next = UInt32((UInt64(p) + UInt64(e.length)) % UInt64(logLength))
            guard let n = valid[next], n.entry.sequenceNumber == e.entry.sequenceNumber &+ 1 else { return nil }
            return next
        }
        // 2–4. A head ends a maximal run; its sequence runs from its Tail to it with +1 steps and is
        // valid only when Tail lies inside it. The active one has the largest head sequence number.
        var best: [VHDXLogEntry]?
        for (p, h) in valid where successor(p) == nil {
            var chain: [VHDXLogEntry] = []
            var q = h.entry.tail
            var steps = 0
            while steps <= Int(logLength / sector) {
                guard let e = valid[q] else { break }
                if let prev = chain.last, e.entry.sequenceNumber != prev.sequenceNumber &+ 1 { break }
                chain.append(e.entry)
                if q == p { break }
                guard let n = successor(q) else { break }
                q = n
                steps += 1
            }
            guard chain.last == h.entry, let f = chain.first, valid[h.entry.tail]?.entry == f else { continue }
            if best == nil || h.entry.sequenceNumber > best!.last!.sequenceNumber { best = chain }
        }
        guard let seq = best else {
            throw FormatError(VHDX.formatName, "log", at: logOffset, "log GUID \(header.logGuid) is set but the log holds no valid sequence")
        }
        // 6. A file shorter than the head's FlushedFileOffset was truncated [SPEC:521].
        let head = seq.last!
        guard source.size >= head.flushedFileOffset else {
            throw FormatError(VHDX.formatName, "log entry", at: logOffset,
                              "file size 0x\(String(source.size, radix: 16)) is below the flushed file offset 0x\(String(head.flushedFileOffset, radix: 16)): the file was truncated")
        }
        return seq
    }
}

/// A block source with a replayed log laid over it, in memory: what the file would hold after
/// replay, without writing (read-only opens must replay in memory [SPEC:959]).
public final class VHDXReplayedSource: BlockSource, @unchecked Sendable {
    // @unchecked: all state is immutable after init.
    public let base: any BlockSource
    public let size: UInt64
    /// Final contents of every 4 KiB sector a data descriptor wrote (later descriptors win).
    let pages: [UInt64: [UInt8]]
    /// Zeroed ranges, sorted and disjoint; data pages written after a zero range override it.
    let zeros: [Range<UInt64>]
    public let entries: [VHDXLogEntry]

    public init(base: any BlockSource, entries: [VHDXLogEntry]) {
        self.base = base
        self.entries = entries
        var pages: [UInt64: [UInt8]] = [:]
        var zeros: [Range<UInt64>] = []
        var end = base.size
        for e in entries {
            for d in e.descriptors {
                switch d {
                case let .data(off, sector):
                    pages[off] = sector
                    end = max(end, off + UInt64(sector.count))
                case let .zero(off, len):
                    let (zEnd, o) = off.addingReportingOverflow(len)
                    guard !o, len > 0 else { continue }
                    for k in pages.keys where k >= off && k < zEnd { pages[k] = nil }
                    zeros.append(off..<zEnd)
                    end = max(end, zEnd)
                }
            }
            end = max(end, e.lastFileOffset)
        }
        zeros.sort { $0.lowerBound < $1.lowerBound }
        var merged: [Range<UInt64>] = []
        for z in zeros {
            if let l = merged.last, z.lowerBound <= l.upperBound {
                merged[merged.count - 1] = l.lowerBound..<max(l.upperBound, z.upperBound)
            } else { merged.append(z) }
        }
        self.pages = pages
        self.zeros = merged
        self.size = end
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        let end = offset + UInt64(buffer.count)
        let baseEnd = min(end, base.size)
        if offset < baseEnd {
            try base.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(baseEnd - offset)]))
        }
        if baseEnd < end {
            let from = Int(max(baseEnd, offset) - offset)
            (buffer.baseAddress! + from).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - from)
        }
        for z in zeros where z.lowerBound < end && offset < z.upperBound {
            let a = Int(max(z.lowerBound, offset) - offset), b = Int(min(z.upperBound, end) - offset)
            (buffer.baseAddress! + a).initializeMemory(as: UInt8.self, repeating: 0, count: b - a)
        }
        let sector = UInt64(VHDX.logSectorSize)
        var p = offset / sector * sector
        while p < end {
            if let page = pages[p] {
                let a = max(p, offset), b = min(p + sector, end)
                page.withUnsafeBytes { src in
                    (buffer.baseAddress! + Int(a - offset)).copyMemory(from: src.baseAddress! + Int(a - p), byteCount: Int(b - a))
                }
            }
            p += sector
        }
    }

    /// Writes the replayed changes into `target` (the same file, opened writable).
    public func writeBack(to target: RawFile) throws {
        for z in zeros {
            var p = z.lowerBound
            let chunk = [UInt8](repeating: 0, count: 1 << 20)
            while p < z.upperBound {
                let n = Int(min(UInt64(chunk.count), z.upperBound - p))
                try chunk.withUnsafeBytes { try target.write(at: p, from: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                p += UInt64(n)
            }
        }
        for (off, page) in pages.sorted(by: { $0.key < $1.key }) { try target.write(at: off, page) }
        if target.size < size { try target.truncate(to: size) }
    }
}
