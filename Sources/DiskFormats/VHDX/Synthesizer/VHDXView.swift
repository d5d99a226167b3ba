import BlockCore

/// A dynamic VHDX synthesized on demand from any block source (vhdx-notes §9a): the bytes a
/// VHDX file of that disk would hold, served at any offset without materializing the file.
///
/// Layout (the structure Hyper-V writes): file identifier, two headers (seq 1 and 2), two
/// identical region tables, a 1 MiB empty log at 1 MiB, 1 MiB of metadata at 2 MiB, the BAT at
/// 3 MiB, then one payload block per allocated block from `payloadStart`, in virtual order.
///
/// Allocation: a block is allocated iff some part of it is `.data` in the source's extent map.
/// Data is never read to decide (that would make opening cost a full read of the disk), so a
/// block whose data happens to be all zeros still gets a payload block. Every other block is
/// BAT state ZERO with offset 0 (Hyper-V fails on a non-zero offset there; vhdx-notes §5).
///
/// Deterministic: the GUIDs derive from `options.seed`, there is no clock, and every byte is
/// a pure function of (source extents, source bytes, options). The file the `convert` command
/// writes is this view copied, so the stream and the file are the same bytes.
public final class VHDXView: BlockSource {
    public let source: any BlockSource
    public let options: VHDXSynthesisOptions

    public let virtualSize: UInt64
    public let blockSize: UInt32
    public let logicalSectorSize: UInt32
    public let physicalSectorSize: UInt32
    public let geometry: VHDX.BATGeometry

    public let logOffset = VHDXSkeleton.logOffset
    public let logLength = UInt64(VHDXSkeleton.logLength)
    public let metadataOffset = VHDXSkeleton.metadataOffset
    public let metadataLength = UInt64(VHDXSkeleton.metadataLength)
    public let batOffset = VHDXSkeleton.batOffset
    /// BAT region length: entries × 8 rounded up to 1 MiB.
    public let batLength: UInt64
    /// Offset D where payload begins. Everything before it — headers, region tables, log,
    /// metadata, BAT — is the skeleton; it depends on the extent map only, never on data.
    public let payloadStart: UInt64
    /// Size of the VHDX file: `payloadStart + allocatedBlockCount × blockSize`.
    public let size: UInt64

    public let fileWriteGuid: GUID
    public let dataWriteGuid: GUID
    public let virtualDiskID: GUID

    /// Allocated blocks as runs, in virtual order (which is also file order), stored back to
    /// back from `payloadStart`.
    public let payload: PayloadRunMap
    public var allocatedBlockCount: UInt64 { payload.allocatedCount }

    /// Every structure before the payload except the BAT's entries (the one builder `create`
    /// uses too).
    public let skeletonStructures: VHDXSkeleton
    var header1: [UInt8] { skeletonStructures.header1 }
    var header2: [UInt8] { skeletonStructures.header2 }
    var regionTable: [UInt8] { skeletonStructures.regionTable }
    var metadataBytes: [UInt8] { skeletonStructures.metadataBytes }
    var metadataEntries: [VHDXSkeleton.MetadataEntry] { skeletonStructures.metadataEntries }
    /// Bytes 0 ..< 0x50000: identifier, both headers, both region tables.
    private let headerArea: [UInt8]

    /// Builds the view. Reads the source's extent map once; reads no data.
    public init(source: any BlockSource, options: VHDXSynthesisOptions = VHDXSynthesisOptions()) throws {
        let v = source.size
        let parameters = VHDXDiskParameters(virtualSize: v, blockSize: options.effectiveBlockSize(forVirtualSize: v),
                                            logicalSectorSize: options.logicalSectorSize,
                                            physicalSectorSize: options.physicalSectorSize)
        try parameters.validate()
        // The synthesizer's own rule, beyond MS-VHDX (which only wants each size to be 512 or
        // 4096): the disks it serves are attached to hypervisors that report the physical size
        // to the guest as its physical block size, which cannot be smaller than a logical
        // sector. `create` does not apply it: a child must copy its parent's sizes as they are
        // (MS-VHDX 2.6.2.4), and qemu-img writes 512 physical for any logical size.
        guard options.physicalSectorSize >= options.logicalSectorSize else {
            throw VHDXSynthesisError.invalidSectorSize(logical: options.logicalSectorSize, physical: options.physicalSectorSize)
        }
        // Every GUID derives from these 16 bytes (vhdx-notes §9a, G(x)).
        guard options.seed.count == 16 else { throw VHDXSynthesisError.invalidSeed(count: options.seed.count) }
        let b = parameters.blockSize

        self.source = source
        self.options = options
        virtualSize = v
        blockSize = b
        logicalSectorSize = options.logicalSectorSize
        physicalSectorSize = options.physicalSectorSize

        fileWriteGuid = GUID.derived(seed: options.seed, label: "file")
        dataWriteGuid = GUID.derived(seed: options.seed, label: "data")
        virtualDiskID = GUID.derived(seed: options.seed, label: "vdisk")
        skeletonStructures = try VHDXSkeleton(parameters: parameters, fileWriteGuid: fileWriteGuid, dataWriteGuid: dataWriteGuid,
                                              virtualDiskID: virtualDiskID, creator: options.creator,
                                              userMetadata: options.userMetadata)
        geometry = skeletonStructures.geometry
        batLength = skeletonStructures.batLength
        payloadStart = skeletonStructures.payloadStart

        // Allocation map: blocks touched by any data extent.
        payload = try PayloadRunMap(source: source, unitSize: UInt64(b), payloadStart: payloadStart)
        size = payload.payloadEnd

        let sk = skeletonStructures
        var area = [UInt8](repeating: 0, count: Int(VHDX.regionTable2Offset) + VHDX.regionTableSize)
        area.put(sk.fileIdentifier, at: Int(VHDX.fileIdentifierOffset))
        area.put(sk.header1, at: Int(VHDX.header1Offset))
        area.put(sk.header2, at: Int(VHDX.header2Offset))
        area.put(sk.regionTable, at: Int(VHDX.regionTable1Offset))
        area.put(sk.regionTable, at: Int(VHDX.regionTable2Offset))
        headerArea = area
    }

    // MARK: Allocation queries

    /// Allocated virtual blocks, as ranges of block indices in order.
    public var allocatedBlocks: [Range<UInt64>] { payload.runs.map(\.units) }

    /// File offset of virtual block `p`'s payload, or nil when it has none (state ZERO).
    public func fileOffset(ofBlock p: UInt64) -> UInt64? {
        payload.rank(ofUnit: p).map { payload.dataOffset(ofRank: $0) }
    }

    /// The BAT entry at `index` (payload entries interleaved with sector-bitmap entries, §5).
    public func batEntry(_ index: UInt64) -> UInt64 {
        var e: UInt64 = 0
        fillBATEntries(index..<index + 1) { _, v in e = v }
        return e
    }

    /// Calls `body(index, entry)` for each BAT entry index in `range` ∩ [0, totalEntries).
    private func fillBATEntries(_ range: Range<UInt64>, _ body: (UInt64, UInt64) -> Void) {
        let r = range.clamped(to: 0..<geometry.totalEntries)
        guard !r.isEmpty else { return }
        let stride = geometry.chunkRatio + 1
        let zeroEntry = UInt64(VHDX.PayloadState.zero.rawValue)
        let present = UInt64(VHDX.PayloadState.fullyPresent.rawValue)
        var ranks = payload.rankCursor(fromUnit: r.lowerBound - r.lowerBound / stride)
        for i in r {
            if i % stride == geometry.chunkRatio {
                body(i, 0)  // sector-bitmap entry: NOT_PRESENT in dynamic disks [SPEC:670-700]
                continue
            }
            if let k = ranks.rank(ofUnit: i - i / stride) {
                body(i, payload.dataOffset(ofRank: k) | present)
            } else {
                body(i, zeroEntry)
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
        overlay(headerArea, at: 0)
        overlay(metadataBytes, at: metadataOffset)
        let batUsedEnd = batOffset + geometry.totalEntries * 8
        let lo = max(pos, batOffset), hi = min(end, batUsedEnd)
        if lo < hi {
            let firstEntry = (lo - batOffset) / 8
            let lastEntry = (hi - batOffset - 1) / 8
            var entries = [UInt64](repeating: 0, count: Int(lastEntry - firstEntry + 1))
            fillBATEntries(firstEntry..<lastEntry + 1) { i, e in entries[Int(i - firstEntry)] = e.littleEndian }
            entries.withUnsafeBytes { src in
                let skip = Int(lo - batOffset - firstEntry * 8)
                (base + Int(lo - pos)).copyMemory(from: src.baseAddress! + skip, byteCount: Int(hi - lo))
            }
        }
    }

    /// The skeleton, bytes [0, payloadStart): what the exposure layer writes as the plugin file.
    public func skeleton() throws -> [UInt8] {
        try read(at: 0, count: Int(payloadStart))
    }

    /// The extent map of the VHDX file itself: structures and payload data are `.data`; the
    /// rest (reserved areas, the empty log, padding, source zero/absent ranges inside allocated
    /// blocks) is `.zero`. Writing only the data extents into a zeroed file reproduces the view.
    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out: [Extent] = []
        func add(_ lo: UInt64, _ hi: UInt64, _ kind: ExtentKind) {
            let a = max(lo, r.lowerBound), b = min(hi, r.upperBound)
            if a < b { out.append(Extent(offset: a, length: b - a, kind: kind)) }
        }
        if r.lowerBound < payloadStart {
            let batUsedEnd = batOffset + geometry.totalEntries * 8
            add(0, UInt64(headerArea.count), .data)
            add(UInt64(headerArea.count), metadataOffset, .zero)
            add(metadataOffset, metadataOffset + UInt64(metadataBytes.count), .data)
            add(metadataOffset + UInt64(metadataBytes.count), batOffset, .zero)
            add(batOffset, batUsedEnd, .data)
            add(batUsedEnd, payloadStart, .zero)
        }
        try payload.appendExtents(of: source, in: r, to: &out)
        return coalesce(out)
    }
}

extension VHDXView: FileBackedSource {
    /// Payload ranges map to source ranges unchanged (see `read(at:into:)`), so they are file
    /// spans whenever the source's are; the skeleton is synthesized and never is.
    public func fileSpans(in range: Range<UInt64>) -> [FileSpan]? {
        guard range.lowerBound >= payloadStart, range.upperBound <= size,
              let fb = source as? any FileBackedSource else { return nil }
        return payload.fileSpans(of: fb, in: range)
    }
}
