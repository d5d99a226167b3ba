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
    /// Blocks touched by `.data` extents, stored back to back from the data offset.
    public let payload: PayloadRunMap
    /// Ranges of blocks that are entirely `.zero` in the source (map entry ZERO).
    public let zeroBlocks: [Range<UInt64>]
    public var allocatedBlockCount: UInt64 { payload.allocatedCount }
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

        // One extent map for both: data blocks (the payload) and wholly zero blocks (ZERO entries).
        let extents = try source.extents(in: 0..<v)
        let (runs, rank) = PayloadRunMap.allocatedRuns(in: extents, virtualSize: v, unitSize: bs)
        payload = PayloadRunMap(runs: runs, allocatedCount: rank, unitSize: bs, virtualSize: v, payloadStart: layout.dataOffset)
        var zeros: [Range<UInt64>] = []
        for e in extents where e.kind == .zero && e.length > 0 {
            let end = min(e.end, v)
            guard e.offset < end else { continue }
            // Blocks wholly inside one zero extent (adjacent extents of a kind are merged).
            let first = (e.offset + bs - 1) / bs
            let last = end == v ? (end + bs - 1) / bs : end / bs
            if first < last { zeros.append(first..<last) }
        }
        // Blocks wholly inside a zero extent hold no data extent (extents do not overlap).
        zeroBlocks = zeros
        size = layout.fileSize(allocated: rank)
        let h = VDIHeader(imageType: .normal, blockMapOffset: UInt32(VDILayout.blockMapOffset), dataOffset: UInt32(layout.dataOffset),
                          diskSize: v, blockSize: layout.blockSize, blocksInImage: UInt32(layout.blockCount),
                          blocksAllocated: UInt32(rank), imageUUID: GUID.derived(seed: options.seed, label: "vdi-image"),
                          modificationUUID: GUID.derived(seed: options.seed, label: "vdi-modification"))
        headerBytes = h.serialize()
        header = h
    }

    public func rank(ofBlock p: UInt64) -> UInt64? { payload.rank(ofUnit: p) }

    public func block(ofRank k: UInt64) -> UInt64 { payload.unit(ofRank: k) }

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
        let head = offset < payloadStart ? Int(min(UInt64(buffer.count), payloadStart - offset)) : 0
        if head > 0 { fillSkeleton(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<head])) }
        if head < buffer.count {
            try payload.read(from: source, at: offset + UInt64(head), into: UnsafeMutableRawBufferPointer(rebasing: buffer[head...]))
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
        var ranks = payload.rankCursor(fromUnit: first)
        for p in first...last {
            let e = ranks.rank(ofUnit: p).map { UInt32($0) } ?? (isZeroBlock(p) ? VDI.blockZero : VDI.blockFree)
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
        try payload.appendExtents(of: source, in: r, to: &out)
        return coalesce(out)
    }
}

extension VDIView: NativeFormatView {
    public static let formatName = VDI.formatName
    public static let pointerPlacement = PluginPointerPlacement.vdiPointerArea
    public func allocatedUnitCount() throws -> UInt64 { allocatedBlockCount }
    public var allocationUnit: UInt64 { UInt64(blockSize) }

    public func fileOffset(ofVirtual offset: UInt64) -> UInt64? { payload.fileOffset(ofVirtual: offset) }
}

extension VDIView: FileBackedSource {
    public func fileSpans(in range: Range<UInt64>) -> [FileSpan]? {
        guard range.lowerBound >= payloadStart, range.upperBound <= size, let fb = source as? any FileBackedSource else { return nil }
        return payload.fileSpans(of: fb, in: range)
    }
}
