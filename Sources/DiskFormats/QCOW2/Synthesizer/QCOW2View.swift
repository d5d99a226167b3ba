import BlockCore

/// What a synthesized qcow2 looks like, besides its content.
public struct QCOW2ViewOptions: Sendable, Hashable {
    /// log2 of the cluster size: 9 (512 B) … 21 (2 MiB); 16 (64 KiB) by default, as qemu-img.
    public var clusterBits: UInt32
    /// The opaque plugin pointer blob, stored in BootLab's own header extension (fixed-size
    /// area); nil writes no extension (the form `convert -O qcow2` writes).
    public var pluginPointer: [UInt8]?

    public init(clusterBits: UInt32 = QCOW2.defaultClusterBits, pluginPointer: [UInt8]? = nil) {
        self.clusterBits = clusterBits
        self.pluginPointer = pluginPointer
    }

    /// log2 of `clusterSize`, or a typed error when it is not a power of two in range.
    public static func clusterBits(forClusterSize clusterSize: UInt64) throws -> UInt32 {
        guard clusterSize.nonzeroBitCount == 1 else { throw QCOW2ViewError.invalidClusterSize(clusterSize) }
        let b = UInt32(clusterSize.trailingZeroBitCount)
        guard (QCOW2.minClusterBits...QCOW2.maxClusterBits).contains(b) else { throw QCOW2ViewError.invalidClusterSize(clusterSize) }
        return b
    }
}

/// A qcow2 version 3 file synthesized on demand from any block source: the bytes such a file
/// would hold, served at any offset without materializing it (docs/formats/qcow2.md).
///
/// A cluster gets a data cluster iff some part of it is `.data` in the source's extent map
/// (data is never read to decide); zero and absent clusters stay unallocated (L2 entry 0). No
/// compression, no snapshots, no backing file. Every structure lies before `payloadStart`, and
/// refcounts count every cluster of the file exactly once, so `qemu-img check` finds neither
/// leaks nor corruptions. Deterministic: qcow2 has no identifiers, and nothing reads a clock.
public final class QCOW2View: BlockSource {
    public let source: any BlockSource
    public let options: QCOW2ViewOptions
    public let layout: QCOW2Skeleton
    public let virtualSize: UInt64
    public let clusterSize: UInt64
    public let size: UInt64
    /// Clusters touched by `.data` extents, stored back to back from `payloadStart`.
    public let payload: PayloadRunMap
    /// Header fields and extensions (the start of cluster 0).
    public let headerBytes: [UInt8]
    /// The start of the plugin pointer area (length + blob), empty without a pointer.
    public let pointerAreaBytes: [UInt8]

    public var payloadStart: UInt64 { layout.payloadStart }
    public var allocatedClusters: UInt64 { layout.dataClusters }

    /// Builds the view. Reads the source's extent map once; reads no data.
    public init(source: any BlockSource, options: QCOW2ViewOptions = QCOW2ViewOptions()) throws {
        let v = source.size
        guard (QCOW2.minClusterBits...QCOW2.maxClusterBits).contains(options.clusterBits) else {
            throw QCOW2ViewError.invalidClusterSize(options.clusterBits < 64 ? 1 << UInt64(options.clusterBits) : 0)
        }
        let c: UInt64 = 1 << UInt64(options.clusterBits)
        // The runs come first: the L2 tables they need decide where the payload starts.
        let (runs, rank) = PayloadRunMap.allocatedRuns(in: try source.extents(in: 0..<v), virtualSize: v, unitSize: c)
        // L1 indices whose L2 range holds allocated clusters.
        let perL2 = c / 8
        var tables: [UInt64] = []
        for r in runs {
            let a = r.firstUnit / perL2, b = (r.firstUnit + r.count - 1) / perL2
            var k = max(a, (tables.last ?? 0) + (tables.isEmpty ? 0 : 1))
            while k <= b { tables.append(k); k += 1 }
        }
        pointerAreaBytes = try options.pluginPointer.map { try QCOW2PluginPointerArea.encode($0) } ?? []
        layout = try QCOW2Skeleton(virtualSize: v, clusterBits: options.clusterBits, l2Tables: tables, dataClusters: rank,
                                   withPointerArea: options.pluginPointer != nil)
        self.source = source
        self.options = options
        payload = PayloadRunMap(runs: runs, allocatedCount: rank, unitSize: c, virtualSize: v, payloadStart: layout.payloadStart)
        virtualSize = v
        clusterSize = c
        size = layout.fileSize
        headerBytes = layout.header.serialize()
    }

    /// The view with a plugin pointer blob in its header extension (`options.pluginPointer`
    /// replaced by `pluginPointer`): what `expose` writes as a qcow2 plugin file.
    public convenience init(source: any BlockSource, options: QCOW2ViewOptions = QCOW2ViewOptions(), pluginPointer: [UInt8]?) throws {
        var o = options
        o.pluginPointer = pluginPointer
        try self.init(source: source, options: o)
    }

    // MARK: Allocation queries

    /// File offset of virtual cluster `v`'s data, or nil when it is unallocated.
    public func fileOffset(ofCluster v: UInt64) -> UInt64? {
        payload.rank(ofUnit: v).map { payload.dataOffset(ofRank: $0) }
    }

    /// The L2 entry for virtual cluster `v`: its data offset with COPIED, or 0.
    public func l2Entry(ofCluster v: UInt64) -> UInt64 {
        fileOffset(ofCluster: v).map { $0 | QCOW2.copiedFlag } ?? 0
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
        // Header.
        let hEnd = UInt64(headerBytes.count)
        if pos < hEnd {
            let hi = min(end, hEnd)
            headerBytes.withUnsafeBytes { src in
                (base).copyMemory(from: src.baseAddress! + Int(pos), byteCount: Int(hi - pos))
            }
        }
        if !pointerAreaBytes.isEmpty {
            let aStart = layout.pointerAreaOffset, aEnd = aStart + UInt64(pointerAreaBytes.count)
            let lo = max(pos, aStart), hi = min(end, aEnd)
            if lo < hi {
                pointerAreaBytes.withUnsafeBytes { src in
                    (base + Int(lo - pos)).copyMemory(from: src.baseAddress! + Int(lo - aStart), byteCount: Int(hi - lo))
                }
            }
        }
        let l = layout
        /// Writes big-endian entries of `width` bytes for indices of a table at `start` with
        /// `count` entries that overlap the buffer.
        func entries(start: UInt64, count: UInt64, width: UInt64, _ value: (UInt64) -> UInt64) {
            let tEnd = start + count * width
            let lo = max(pos, start), hi = min(end, tEnd)
            guard lo < hi else { return }
            var i = (lo - start) / width
            while start + i * width < hi {
                let v = value(i)
                if v != 0 {
                    let at = start + i * width
                    for b in 0..<width {
                        let o = at + b
                        if o >= pos && o < end {
                            base.storeBytes(of: UInt8(truncatingIfNeeded: v >> (8 * (width - 1 - b))), toByteOffset: Int(o - pos), as: UInt8.self)
                        }
                    }
                }
                i += 1
            }
        }
        entries(start: l.refcountTableOffset, count: l.refcountBlocks, width: 8) { l.refcountTableEntry($0) }
        entries(start: l.refcountBlocksOffset, count: l.totalClusters, width: 2) { UInt64(l.refcount(ofCluster: $0)) }
        entries(start: l.l1Offset, count: l.l1Entries, width: 8) { l.l1Entry($0) }
        let perL2 = l.l2Entries
        let l2End = min(end, payloadStart)
        guard l2End > l.l2Offset, !l.l2Tables.isEmpty else { return }
        let t0 = Int((max(pos, l.l2Offset) - l.l2Offset) / clusterSize), t1 = Int((l2End - 1 - l.l2Offset) / clusterSize)
        for t in t0...t1 {
            let k = l.l2Tables[t]
            let start = l.l2Offset + UInt64(t) * clusterSize
            let firstCluster = k * perL2
            let n = min(perL2, QCOW2.divRoundUp(virtualSize, clusterSize) - firstCluster)
            entries(start: start, count: n, width: 8) { l2Entry(ofCluster: firstCluster + $0) }
        }
    }

    /// The skeleton, bytes [0, payloadStart).
    public func skeleton() throws -> [UInt8] { try read(at: 0, count: Int(payloadStart)) }

    /// Structures and payload data are `.data`; the rest of cluster 0, unused table entries,
    /// padding and source zero/absent ranges inside allocated clusters are `.zero`.
    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out: [Extent] = []
        func add(_ lo: UInt64, _ hi: UInt64, _ kind: ExtentKind) {
            let a = max(lo, r.lowerBound), b = min(hi, r.upperBound)
            if a < b { out.append(Extent(offset: a, length: b - a, kind: kind)) }
        }
        if r.lowerBound < payloadStart {
            add(0, UInt64(headerBytes.count), .data)
            add(UInt64(headerBytes.count), clusterSize, .zero)
            add(clusterSize, payloadStart, .data)
        }
        try payload.appendExtents(of: source, in: r, to: &out)
        return coalesce(out)
    }
}

extension QCOW2View: FileBackedSource {
    /// Payload ranges map to source ranges unchanged, so they are file spans whenever the
    /// source's are; the skeleton is synthesized and never is.
    public func fileSpans(in range: Range<UInt64>) -> [FileSpan]? {
        guard range.lowerBound >= payloadStart, range.upperBound <= size,
              let fb = source as? any FileBackedSource else { return nil }
        return payload.fileSpans(of: fb, in: range)
    }
}

extension QCOW2View: NativeFormatView {
    public static let formatName = QCOW2.formatName
    public static let pointerPlacement = PluginPointerPlacement.qcow2HeaderExtension
    public var allocationUnit: UInt64 { clusterSize }
    public func allocatedUnitCount() throws -> UInt64 { allocatedClusters }

    public func fileOffset(ofVirtual offset: UInt64) -> UInt64? { payload.fileOffset(ofVirtual: offset) }

    /// Header fields, the refcount structures, L1 and the L2 tables summarized as runs.
    public func layoutDump() -> String {
        let l = layout
        let h = l.header
        func hex(_ v: UInt64) -> String { QCOW2.hex(v) }
        var lines: [String] = []
        lines.append("qcow2 v3 (synthesized)")
        lines.append("file size \(size) (\(hex(size))), \(l.totalClusters) clusters of \(ByteSize.format(clusterSize)), payload starts at \(hex(payloadStart))")
        lines.append("virtual size \(virtualSize) (\(ByteSize.format(virtualSize)))")
        lines.append("")
        lines.append("header @0x0: version 3, header_length \(h.headerLength), cluster_bits \(h.clusterBits), refcount_order \(h.refcountOrder), crypt 0, compression 0 (zlib)")
        lines.append("  features: incompatible 0x0, compatible 0x0, autoclear 0x0; snapshots 0; backing file none")
        lines.append("  l1_size \(h.l1Size) @\(hex(h.l1TableOffset)), refcount table \(h.refcountTableClusters) cluster(s) @\(hex(h.refcountTableOffset))")
        for e in h.extensions {
            let what = e.type == QCOW2.extPluginPointer ? "plugin pointer (BLPT): area \(hex(l.pointerAreaOffset)), \(l.pointerAreaClusters) cluster(s) with refcount 0, blob \(options.pluginPointer?.count ?? 0) bytes, sha256 \(SHA256.hash(options.pluginPointer ?? []).hex.prefix(16))"
                : e.type == QCOW2.extFeatureNameTable ? "feature name table, \(e.data.count / 48) names" : "?"
            lines.append("  extension 0x\(String(e.type, radix: 16)) @\(hex(e.offset - 8)), \(e.data.count) bytes: \(what)")
        }
        lines.append("  end of extensions @\(hex(UInt64(headerBytes.count - 8)))")
        lines.append("refcount table @\(hex(l.refcountTableOffset)): \(l.refcountBlocks) block(s) from \(hex(l.refcountBlocksOffset)), \(l.refcountsPerBlock) 16-bit refcounts each")
        lines.append(l.pointerAreaClusters == 0 ? "refcounts: clusters 0..<\(l.totalClusters) = 1, none beyond"
                     : "refcounts: clusters 0..<\(l.totalClusters) = 1 except the pointer area 1..<\(1 + l.pointerAreaClusters) = 0, none beyond")
        lines.append("L1 table @\(hex(l.l1Offset)): \(l.l1Entries) entries in \(l.l1Clusters) cluster(s), \(l.l2Tables.count) L2 table(s) from \(hex(l.l2Offset))")
        for (t, k) in l.l2Tables.enumerated() {
            lines.append("  L1[\(k)] -> L2 @\(hex(l.l2Offset + UInt64(t) * clusterSize)) | COPIED")
        }
        var p: UInt64 = 0
        let nClusters = QCOW2.divRoundUp(virtualSize, clusterSize)
        for run in payload.runs {
            if run.firstUnit > p { lines.append("  clusters \(p)..<\(run.firstUnit): unallocated (L2 entry 0)") }
            let off = payloadStart + run.firstRank * clusterSize
            lines.append("  clusters \(run.firstUnit)..<\(run.firstUnit + run.count): data at \(hex(off))..<\(hex(off + run.count * clusterSize)) | COPIED")
            p = run.firstUnit + run.count
        }
        if p < nClusters { lines.append("  clusters \(p)..<\(nClusters): unallocated (L2 entry 0)") }
        lines.append("allocated clusters: \(allocatedClusters) of \(nClusters)")
        return lines.joined(separator: "\n") + "\n"
    }
}
