import BlockCore

/// A hosted monolithicSparse VMDK synthesized on demand from any block source: header, embedded
/// descriptor, redundant grain directory and tables, grain directory and tables (the skeleton),
/// then one grain per allocated grain, in virtual order. Zero and absent grains get no grain
/// (grain table entry 0). Deterministic: the CID and ddb.uuid derive from the seed.
public final class VMDKView: BlockSource {
    public let source: any BlockSource
    public let options: VMDKSynthesisOptions
    public let layout: VMDKSkeleton
    public let virtualSize: UInt64
    public let grainSize: UInt64
    public let payloadStart: UInt64
    public let size: UInt64
    /// Grains touched by `.data` extents, stored back to back from `payloadStart`.
    public let payload: PayloadRunMap
    public var allocatedGrainCount: UInt64 { payload.allocatedCount }
    /// Header sector and descriptor area.
    private let headArea: [UInt8]
    private let gd: [UInt8]
    private let rgd: [UInt8]

    /// Builds the view. Reads the source's extent map once; reads no data. `descriptorExtras`
    /// are extra `ddb.` lines (a plugin pointer) for the embedded descriptor; they must fit its
    /// fixed area (`options.descriptorSectors`).
    public init(source: any BlockSource, options: VMDKSynthesisOptions = VMDKSynthesisOptions(), descriptorExtras: [String] = []) throws {
        var o = options
        o.descriptorExtras += descriptorExtras
        layout = try VMDKSkeleton(virtualSize: source.size, options: o)
        self.source = source
        self.options = o
        virtualSize = source.size
        grainSize = o.grainSize
        payloadStart = layout.overhead * VMDK.sector
        payload = try PayloadRunMap(source: source, unitSize: grainSize, payloadStart: payloadStart)
        size = payload.payloadEnd
        headArea = layout.header.serialize() + layout.descriptorBytes
        gd = layout.directoryBytes(redundant: false)
        rgd = layout.directoryBytes(redundant: true)
    }

    // MARK: Allocation queries

    /// File offset of grain `g`'s payload, or nil when it has none (GTE 0).
    public func fileOffset(ofGrain g: UInt64) -> UInt64? {
        payload.rank(ofUnit: g).map { payload.dataOffset(ofRank: $0) }
    }

    /// Grain table entries for grains `range` (sector numbers, 0 = unallocated).
    private func fillGTEs(_ range: Range<UInt64>, _ body: (UInt64, UInt32) -> Void) {
        guard !range.isEmpty else { return }
        var ranks = payload.rankCursor(fromUnit: range.lowerBound)
        for g in range {
            if g < layout.grainCount, let k = ranks.rank(ofUnit: g) {
                body(g, UInt32(payload.dataOffset(ofRank: k) / VMDK.sector))
            } else {
                body(g, 0)
            }
        }
    }

    // MARK: BlockSource

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        let head = offset < payloadStart ? Int(min(UInt64(buffer.count), payloadStart - offset)) : 0
        if head > 0 { fillSkeleton(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<head])) }
        if head < buffer.count {
            try payload.read(from: source, at: offset + UInt64(head), into: UnsafeMutableRawBufferPointer(rebasing: buffer[head...]))
        }
    }

    /// Skeleton bytes [pos, pos+buf.count) ⊂ [0, payloadStart).
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
        overlay(headArea, at: 0)
        overlay(rgd, at: layout.rgdOffset * VMDK.sector)
        overlay(gd, at: layout.gdOffset * VMDK.sector)
        // Both copies of the grain tables: grain g's entry at tableStart + 4g (tables are contiguous).
        for tables in [layout.rgtSector(0) * VMDK.sector, layout.gtSector(0) * VMDK.sector] {
            let tablesEnd = tables + layout.gtCount * layout.gtSectors * VMDK.sector
            let lo = max(pos, tables), hi = min(end, tablesEnd)
            guard lo < hi else { continue }
            let first = (lo - tables) / 4, last = (hi - tables - 1) / 4
            var entries = [UInt32](repeating: 0, count: Int(last - first + 1))
            fillGTEs(first..<last + 1) { g, e in entries[Int(g - first)] = e.littleEndian }
            entries.withUnsafeBytes { src in
                (base + Int(lo - pos)).copyMemory(from: src.baseAddress! + Int(lo - tables - first * 4), byteCount: Int(hi - lo))
            }
        }
    }

    /// Bytes [0, payloadStart): what a plugin file stores.
    public func skeleton() throws -> [UInt8] { try read(at: 0, count: Int(payloadStart)) }

    /// The file's own extent map: header, descriptor text, directories and tables are `.data`,
    /// padding `.zero`; payload as the source's extents inside allocated grains.
    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out: [Extent] = []
        func add(_ lo: UInt64, _ hi: UInt64, _ kind: ExtentKind) {
            let a = max(lo, r.lowerBound), b = min(hi, r.upperBound)
            if a < b { out.append(Extent(offset: a, length: b - a, kind: kind)) }
        }
        if r.lowerBound < payloadStart {
            let metaEnd = (layout.gdOffset + layout.gdSectors + layout.gtCount * layout.gtSectors) * VMDK.sector
            add(0, UInt64(headArea.count), .data)
            add(UInt64(headArea.count), metaEnd, .data)
            add(metaEnd, payloadStart, .zero)
        }
        try payload.appendExtents(of: source, in: r, to: &out)
        return coalesce(out)
    }
}

extension VMDKView: NativeFormatView {
    public static let formatName = VMDK.formatName
    public static let pointerPlacement = PluginPointerPlacement.vmdkDescriptorKey
    public var allocationUnit: UInt64 { grainSize }
    public func allocatedUnitCount() throws -> UInt64 { allocatedGrainCount }

    public func fileOffset(ofVirtual offset: UInt64) -> UInt64? { payload.fileOffset(ofVirtual: offset) }
}

extension VMDKView: FileBackedSource {
    /// Payload ranges are source ranges unchanged; the skeleton is synthesized.
    public func fileSpans(in range: Range<UInt64>) -> [FileSpan]? {
        guard range.lowerBound >= payloadStart, range.upperBound <= size,
              let fb = source as? any FileBackedSource else { return nil }
        return payload.fileSpans(of: fb, in: range)
    }
}
