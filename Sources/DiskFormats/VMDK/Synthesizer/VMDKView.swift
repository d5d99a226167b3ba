import BlockCore

/// A run of allocated grains: virtual grains `firstGrain ..< firstGrain+count` stored back to
/// back from payload slot `firstRank` (file offset `payloadStart + rank·grainSize`).
public struct VMDKGrainRun: Sendable, Hashable {
    public let firstGrain: UInt64
    public let count: UInt64
    public let firstRank: UInt64
}

/// Allocation map shared by the view and the stream writer: grains touched by any `.data` extent
/// of the source, as runs in virtual order. Data is never read to decide.
func vmdkGrainRuns(of source: any BlockSource, grainSize gs: UInt64) throws -> (runs: [VMDKGrainRun], count: UInt64) {
    let v = source.size
    var runs: [VMDKGrainRun] = []
    var rank: UInt64 = 0
    var pending: (first: UInt64, end: UInt64)?
    for e in try source.extents(in: 0..<v) where e.kind == .data && e.length > 0 {
        let end = min(e.end, v)
        guard e.offset < end else { continue }
        let first = e.offset / gs, last = (end - 1) / gs
        if let p = pending, first <= p.end {
            pending = (p.first, max(p.end, last + 1))
        } else {
            if let p = pending {
                runs.append(VMDKGrainRun(firstGrain: p.first, count: p.end - p.first, firstRank: rank))
                rank += p.end - p.first
            }
            pending = (first, last + 1)
        }
    }
    if let p = pending {
        runs.append(VMDKGrainRun(firstGrain: p.first, count: p.end - p.first, firstRank: rank))
        rank += p.end - p.first
    }
    return (runs, rank)
}

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
    public let runs: [VMDKGrainRun]
    public let allocatedGrainCount: UInt64
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
        (runs, allocatedGrainCount) = try vmdkGrainRuns(of: source, grainSize: grainSize)
        size = payloadStart + allocatedGrainCount * grainSize
        headArea = layout.header.serialize() + layout.descriptorBytes
        gd = layout.directoryBytes(redundant: false)
        rgd = layout.directoryBytes(redundant: true)
    }

    // MARK: Allocation queries

    private func firstRun(where isPast: (VMDKGrainRun) -> Bool) -> Int {
        var lo = 0, hi = runs.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if isPast(runs[mid]) { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }

    private func runIndex(containingRank k: UInt64) -> Int { firstRun { $0.firstRank + $0.count > k } }

    /// File offset of grain `g`'s payload, or nil when it has none (GTE 0).
    public func fileOffset(ofGrain g: UInt64) -> UInt64? {
        let i = firstRun { $0.firstGrain + $0.count > g }
        guard i < runs.count, runs[i].firstGrain <= g else { return nil }
        return payloadStart + (runs[i].firstRank + g - runs[i].firstGrain) * grainSize
    }

    /// Grain table entries for grains `range` (sector numbers, 0 = unallocated).
    private func fillGTEs(_ range: Range<UInt64>, _ body: (UInt64, UInt32) -> Void) {
        guard !range.isEmpty else { return }
        var ri = firstRun { $0.firstGrain + $0.count > range.lowerBound }
        for g in range {
            while ri < runs.count && runs[ri].firstGrain + runs[ri].count <= g { ri += 1 }
            if g < layout.grainCount, ri < runs.count, runs[ri].firstGrain <= g {
                let off = payloadStart + (runs[ri].firstRank + g - runs[ri].firstGrain) * grainSize
                body(g, UInt32(off / VMDK.sector))
            } else {
                body(g, 0)
            }
        }
    }

    // MARK: BlockSource

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        let base = buffer.baseAddress!
        var done = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let remaining = buffer.count - done
            if pos < payloadStart {
                let n = Int(min(UInt64(remaining), payloadStart - pos))
                fillSkeleton(at: pos, into: UnsafeMutableRawBufferPointer(start: base + done, count: n))
                done += n
                continue
            }
            // Within one run, file order is virtual order: one source read into the caller's buffer.
            let k = (pos - payloadStart) / grainSize
            let run = runs[runIndex(containingRank: k)]
            let runFileEnd = payloadStart + (run.firstRank + run.count) * grainSize
            let n = Int(min(UInt64(remaining), runFileEnd - pos))
            let v = run.firstGrain * grainSize + (pos - payloadStart - run.firstRank * grainSize)
            let dataCount = v < virtualSize ? Int(min(UInt64(n), virtualSize - v)) : 0
            if dataCount > 0 {
                try source.read(at: v, into: UnsafeMutableRawBufferPointer(start: base + done, count: dataCount))
            }
            if dataCount < n {
                (base + done + dataCount).initializeMemory(as: UInt8.self, repeating: 0, count: n - dataCount)
            }
            done += n
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
        if r.upperBound > payloadStart {
            let start = max(r.lowerBound, payloadStart)
            var ri = runIndex(containingRank: (start - payloadStart) / grainSize)
            while ri < runs.count {
                let run = runs[ri]
                let fileLo = payloadStart + run.firstRank * grainSize
                let fileHi = fileLo + run.count * grainSize
                if fileLo >= r.upperBound { break }
                let lo = max(fileLo, start), hi = min(fileHi, r.upperBound)
                let vLo = run.firstGrain * grainSize + (lo - fileLo)
                let vHi = vLo + (hi - lo)
                let vDataHi = min(vHi, virtualSize)
                if vLo < vDataHi {
                    for e in try source.extents(in: vLo..<vDataHi) {
                        let a = max(e.offset, vLo), b = min(e.end, vDataHi)
                        guard a < b else { continue }
                        add(lo + (a - vLo), lo + (b - vLo), e.kind == .data ? .data : .zero)
                    }
                }
                if vDataHi < vHi { add(lo + (max(vDataHi, vLo) - vLo), hi, .zero) }
                ri += 1
            }
        }
        return coalesce(out)
    }
}

extension VMDKView: NativeFormatView {
    public static let formatName = VMDK.formatName
    public static let pointerPlacement = PluginPointerPlacement.vmdkDescriptorKey
    public var allocationUnit: UInt64 { grainSize }
    public func allocatedUnitCount() throws -> UInt64 { allocatedGrainCount }

    public func fileOffset(ofVirtual offset: UInt64) -> UInt64? {
        guard offset < virtualSize else { return nil }
        return fileOffset(ofGrain: offset / grainSize).map { $0 + offset % grainSize }
    }
}

extension VMDKView: FileBackedSource {
    /// Payload ranges are source ranges unchanged; the skeleton is synthesized.
    public func fileSpans(in range: Range<UInt64>) -> [FileSpan]? {
        guard range.lowerBound >= payloadStart, range.upperBound <= size,
              let fb = source as? any FileBackedSource else { return nil }
        var out: [FileSpan] = []
        var pos = range.lowerBound
        while pos < range.upperBound {
            let run = runs[runIndex(containingRank: (pos - payloadStart) / grainSize)]
            let runFileEnd = payloadStart + (run.firstRank + run.count) * grainSize
            let n = min(range.upperBound, runFileEnd) - pos
            let v = run.firstGrain * grainSize + (pos - payloadStart - run.firstRank * grainSize)
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
