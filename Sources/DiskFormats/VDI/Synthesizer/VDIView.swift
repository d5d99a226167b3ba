import BlockCore

/// What a synthesized VDI looks like, besides its content.
public struct VDISynthesisOptions: Sendable, Hashable {
    /// 16 bytes from which the image and modification UUIDs derive.
    public var seed: [UInt8]
    /// Opaque bytes stored, framed (`PointerAreaFrame`), in the pointer area (docs/formats/vdi.md);
    /// empty: none.
    public var pointer: [UInt8]

    public init(seed: [UInt8] = [UInt8](repeating: 0, count: 16), pointer: [UInt8] = []) {
        self.seed = seed
        self.pointer = pointer
    }
}

/// A run of allocated blocks stored in consecutive data slots.
public struct VDIBlockRun: Sendable, Hashable {
    public let firstBlock: UInt64
    public let count: UInt64
    public let firstRank: UInt64
}

/// A dynamic VDI synthesized on demand from any block source, deterministic.
///
/// A block is allocated iff some part of it is `.data` in the source's extent map (data is
/// never read to decide); allocated blocks are stored in virtual order from the data offset.
/// Every other block's map entry is ZERO (0xFFFFFFFE) when the source says the whole block
/// is `.zero`, FREE (0xFFFFFFFF) otherwise; both read as zeros in a base image. The skeleton
/// (header, pointer area, block map) depends on the size and the extent map only.
public final class VDIView: BlockSource {
    public let source: any BlockSource
    public let options: VDISynthesisOptions
    public let layout: VDILayout
    public let virtualSize: UInt64
    public let size: UInt64
    public let header: VDIHeader
    public let runs: [VDIBlockRun]
    /// Ranges of blocks that are entirely `.zero` in the source (map entry ZERO).
    public let zeroBlocks: [Range<UInt64>]
    public let allocatedBlockCount: UInt64
    private let headerBytes: [UInt8]
    /// The pointer as stored: frame + blob.
    private let pointerBytes: [UInt8]

    public var blockSize: UInt32 { layout.blockSize }
    public var payloadStart: UInt64 { layout.dataOffset }
    public var pointerArea: Range<UInt64> { VDILayout.pointerAreaOffset..<VDILayout.pointerAreaOffset + UInt64(VDILayout.pointerAreaLength) }

    public init(source: any BlockSource, options: VDISynthesisOptions = VDISynthesisOptions()) throws {
        guard options.seed.count == 16 else { throw VDISynthesisError.invalidSeed(count: options.seed.count) }
        guard options.pointer.count <= VDILayout.pointerAreaLength - PointerAreaFrame.headerSize else {
            throw VDISynthesisError.pointerTooLarge(count: options.pointer.count, capacity: VDILayout.pointerAreaLength - PointerAreaFrame.headerSize)
        }
        pointerBytes = PointerAreaFrame.frame(options.pointer)
        let layout = try VDILayout(virtualSize: source.size)
        self.source = source
        self.options = options
        self.layout = layout
        let v = source.size
        virtualSize = v
        let bs = UInt64(layout.blockSize)

        var runs: [VDIBlockRun] = []
        var zeros: [Range<UInt64>] = []
        var rank: UInt64 = 0
        var pending: (first: UInt64, end: UInt64)?
        for e in try source.extents(in: 0..<v) where e.length > 0 {
            let end = min(e.end, v)
            guard e.offset < end else { continue }
            if e.kind == .zero {
                // Blocks wholly inside one zero extent (adjacent extents of a kind are merged).
                let first = (e.offset + bs - 1) / bs
                let last = end == v ? (end + bs - 1) / bs : end / bs
                if first < last { zeros.append(first..<last) }
                continue
            }
            guard e.kind == .data else { continue }
            let first = e.offset / bs, last = (end - 1) / bs
            if let p = pending, first <= p.end {
                pending = (p.first, max(p.end, last + 1))
            } else {
                if let p = pending {
                    runs.append(VDIBlockRun(firstBlock: p.first, count: p.end - p.first, firstRank: rank))
                    rank += p.end - p.first
                }
                pending = (first, last + 1)
            }
        }
        if let p = pending {
            runs.append(VDIBlockRun(firstBlock: p.first, count: p.end - p.first, firstRank: rank))
            rank += p.end - p.first
        }
        self.runs = runs
        // Blocks wholly inside a zero extent hold no data extent (extents do not overlap).
        zeroBlocks = zeros
        allocatedBlockCount = rank
        size = layout.fileSize(allocated: rank)
        let h = VDIHeader(imageType: .normal, blockMapOffset: UInt32(VDILayout.blockMapOffset), dataOffset: UInt32(layout.dataOffset),
                          diskSize: v, blockSize: layout.blockSize, blocksInImage: UInt32(layout.blockCount),
                          blocksAllocated: UInt32(rank), imageUUID: GUID.derived(seed: options.seed, label: "vdi-image"),
                          modificationUUID: GUID.derived(seed: options.seed, label: "vdi-modification"))
        headerBytes = h.serialize()
        header = h
    }

    private func firstRun(where isPast: (VDIBlockRun) -> Bool) -> Int {
        var lo = 0, hi = runs.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if isPast(runs[mid]) { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }

    public func rank(ofBlock p: UInt64) -> UInt64? {
        let i = firstRun { $0.firstBlock + $0.count > p }
        guard i < runs.count, runs[i].firstBlock <= p else { return nil }
        return runs[i].firstRank + p - runs[i].firstBlock
    }

    public func block(ofRank k: UInt64) -> UInt64 {
        let r = runs[firstRun { $0.firstRank + $0.count > k }]
        return r.firstBlock + k - r.firstRank
    }

    private func isZeroBlock(_ p: UInt64) -> Bool {
        var lo = 0, hi = zeroBlocks.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if zeroBlocks[mid].upperBound > p { hi = mid } else { lo = mid + 1 }
        }
        return lo < zeroBlocks.count && zeroBlocks[lo].lowerBound <= p
    }

    /// The block map entry of virtual block `p`.
    public func blockMapEntry(_ p: UInt64) -> UInt32 {
        if let k = rank(ofBlock: p) { return UInt32(k) }
        return isZeroBlock(p) ? VDI.blockZero : VDI.blockFree
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        let base = buffer.baseAddress!
        var done = 0
        let bs = UInt64(blockSize)
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let remaining = UInt64(buffer.count - done)
            let out = base + done
            if pos < payloadStart {
                let n = Int(min(remaining, payloadStart - pos))
                fillSkeleton(at: pos, into: UnsafeMutableRawBufferPointer(start: out, count: n))
                done += n
                continue
            }
            // Within a run, file order is virtual order: one source read per run overlap.
            let k = (pos - payloadStart) / bs
            let run = runs[firstRun { $0.firstRank + $0.count > k }]
            let runFileEnd = layout.blockOffset(rank: run.firstRank + run.count)
            let n = Int(min(remaining, runFileEnd - pos))
            let v = run.firstBlock * bs + (pos - layout.blockOffset(rank: run.firstRank))
            let dataCount = v < virtualSize ? Int(min(UInt64(n), virtualSize - v)) : 0
            if dataCount > 0 { try source.read(at: v, into: UnsafeMutableRawBufferPointer(start: out, count: dataCount)) }
            if dataCount < n { (out + dataCount).initializeMemory(as: UInt8.self, repeating: 0, count: n - dataCount) }
            done += n
        }
    }

    private func fillSkeleton(at pos: UInt64, into buf: UnsafeMutableRawBufferPointer) {
        let base = buf.baseAddress!
        base.initializeMemory(as: UInt8.self, repeating: 0, count: buf.count)
        let end = pos + UInt64(buf.count)
        func overlay(_ bytes: [UInt8], at start: UInt64) {
            let lo = max(pos, start), hi = min(end, start + UInt64(bytes.count))
            guard lo < hi else { return }
            bytes.withUnsafeBytes { src in
                (base + Int(lo - pos)).copyMemory(from: src.baseAddress! + Int(lo - start), byteCount: Int(hi - lo))
            }
        }
        overlay(headerBytes, at: 0)
        overlay(pointerBytes, at: VDILayout.pointerAreaOffset)
        let map = VDILayout.blockMapOffset
        let lo = max(pos, map), hi = min(end, map + layout.blockMapLength)
        guard lo < hi else { return }
        let first = (lo - map) / 4, last = (hi - map - 1) / 4
        var bytes = [UInt8](repeating: 0, count: Int(last - first + 1) * 4)
        var ri = firstRun { $0.firstBlock + $0.count > first }
        for p in first...last {
            while ri < runs.count && runs[ri].firstBlock + runs[ri].count <= p { ri += 1 }
            let e: UInt32
            if ri < runs.count && runs[ri].firstBlock <= p {
                e = UInt32(runs[ri].firstRank + p - runs[ri].firstBlock)
            } else {
                e = isZeroBlock(p) ? VDI.blockZero : VDI.blockFree
            }
            bytes.putLE32(e, at: Int(p - first) * 4)
        }
        let skip = Int(lo - map - first * 4)
        bytes.withUnsafeBytes { (base + Int(lo - pos)).copyMemory(from: $0.baseAddress! + skip, byteCount: Int(hi - lo)) }
    }

    public func skeleton() throws -> [UInt8] { try read(at: 0, count: Int(payloadStart)) }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out: [Extent] = []
        func add(_ lo: UInt64, _ hi: UInt64, _ kind: ExtentKind) {
            let a = max(lo, r.lowerBound), b = min(hi, r.upperBound)
            if a < b { out.append(Extent(offset: a, length: b - a, kind: kind)) }
        }
        if r.lowerBound < payloadStart {
            let ptrEnd = VDILayout.pointerAreaOffset + UInt64(pointerBytes.count)
            let mapEnd = VDILayout.blockMapOffset + layout.blockMapLength
            add(0, UInt64(VDI.headerAreaSize), .data)
            add(UInt64(VDI.headerAreaSize), VDILayout.pointerAreaOffset, .zero)
            add(VDILayout.pointerAreaOffset, ptrEnd, .data)
            add(ptrEnd, VDILayout.blockMapOffset, .zero)
            add(VDILayout.blockMapOffset, mapEnd, .data)
            add(mapEnd, payloadStart, .zero)
        }
        if r.upperBound > payloadStart {
            let bs = UInt64(blockSize)
            let start = max(r.lowerBound, payloadStart)
            var ri = firstRun { $0.firstRank + $0.count > (start - payloadStart) / bs }
            while ri < runs.count {
                let run = runs[ri]
                let fileLo = layout.blockOffset(rank: run.firstRank), fileHi = fileLo + run.count * bs
                if fileLo >= r.upperBound { break }
                let lo = max(fileLo, start), hi = min(fileHi, r.upperBound)
                let vLo = run.firstBlock * bs + (lo - fileLo), vHi = vLo + (hi - lo)
                let vDataHi = min(vHi, virtualSize)
                if vLo < vDataHi {
                    for e in try source.extents(in: vLo..<vDataHi) {
                        let a = max(e.offset, vLo), b = min(e.end, vDataHi)
                        if a < b { add(lo + (a - vLo), lo + (b - vLo), e.kind == .data ? .data : .zero) }
                    }
                }
                if vDataHi < vHi { add(lo + (max(vDataHi, vLo) - vLo), hi, .zero) }
                ri += 1
            }
        }
        return coalesce(out)
    }
}

extension VDIView: NativeFormatView {
    public static let formatName = VDI.formatName
    public static let pointerPlacement = PluginPointerPlacement.vdiPointerArea
    public func allocatedUnitCount() throws -> UInt64 { allocatedBlockCount }
    public var allocationUnit: UInt64 { UInt64(blockSize) }

    public func fileOffset(ofVirtual offset: UInt64) -> UInt64? {
        guard offset < virtualSize else { return nil }
        let bs = UInt64(blockSize)
        return rank(ofBlock: offset / bs).map { layout.blockOffset(rank: $0) + offset % bs }
    }
}

extension VDIView: FileBackedSource {
    public func fileSpans(in range: Range<UInt64>) -> [FileSpan]? {
        guard range.lowerBound >= payloadStart, range.upperBound <= size, let fb = source as? any FileBackedSource else { return nil }
        var out: [FileSpan] = []
        let bs = UInt64(blockSize)
        var pos = range.lowerBound
        while pos < range.upperBound {
            let k = (pos - payloadStart) / bs
            let run = runs[firstRun { $0.firstRank + $0.count > k }]
            let runFileEnd = layout.blockOffset(rank: run.firstRank + run.count)
            let n = min(range.upperBound, runFileEnd) - pos
            let v = run.firstBlock * bs + (pos - layout.blockOffset(rank: run.firstRank))
            let dataCount = v < virtualSize ? min(n, virtualSize - v) : 0
            if dataCount > 0 {
                guard let spans = fb.fileSpans(in: v..<v + dataCount) else { return nil }
                out += spans
            }
            if dataCount < n { out.append(.zeros(length: n - dataCount)) }
            pos += n
        }
        return out
    }
}
