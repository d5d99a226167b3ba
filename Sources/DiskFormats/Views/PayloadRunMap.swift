import BlockCore

/// Virtual units `firstUnit ..< firstUnit+count` stored in consecutive payload slots from
/// `firstRank` (a unit is a VHDX or VHD block, a VMDK grain, a qcow2 cluster, a VDI block).
public struct PayloadRun: Sendable, Hashable {
    public let firstUnit: UInt64
    public let count: UInt64
    public let firstRank: UInt64
    public var units: Range<UInt64> { firstUnit..<firstUnit + count }
}

/// The payload of a native view: which virtual units hold data, in which slot each is stored,
/// and where that slot lies in the file — the part every format shares, so each view keeps only
/// its own structures (skeleton, tables, bitmaps, footer).
///
/// Every format stores its allocated units in virtual order, one slot each, from `payloadStart`:
/// slot `k` is at `payloadStart + k·slotSize` and holds `slotPad` bytes the format owns (a VHD
/// sector bitmap and its alignment; nothing in the other formats) followed by the unit's data.
/// A unit is allocated iff some part of it is `.data` in the source's extent map (data is never
/// read to decide: opening must not cost a read of the disk). Allocated units form runs, so every
/// lookup is a binary search over runs, and a read inside one run of back-to-back slots is one
/// source read straight into the caller's buffer.
///
/// The walks below are the views' hot paths (FUSE and NBD reads, convert): they allocate nothing
/// per read, call the source directly and take the pad filler as a non-escaping closure that only
/// a padded layout calls.
public struct PayloadRunMap: Sendable {
    public let runs: [PayloadRun]
    /// Allocated units, i.e. slots.
    public let allocatedCount: UInt64
    public let unitSize: UInt64
    /// The source's size: a unit past it is padded with zeros in its slot.
    public let virtualSize: UInt64
    public let payloadStart: UInt64
    /// Bytes of each slot before its data that belong to the format (0: slots are back to back).
    public let slotPad: UInt64
    /// How many of the pad's last bytes are a format structure (`.data` in extent maps, filled
    /// by the view on reads); the rest of the pad is zeros.
    public let padStructure: UInt64

    public var slotSize: UInt64 { slotPad + unitSize }
    /// The end of the last slot.
    public var payloadEnd: UInt64 { payloadStart + allocatedCount * slotSize }

    public init(runs: [PayloadRun], allocatedCount: UInt64, unitSize: UInt64, virtualSize: UInt64,
                payloadStart: UInt64, slotPad: UInt64 = 0, padStructure: UInt64 = 0) {
        precondition(unitSize > 0 && padStructure <= slotPad, "payload geometry")
        self.runs = runs
        self.allocatedCount = allocatedCount
        self.unitSize = unitSize
        self.virtualSize = virtualSize
        self.payloadStart = payloadStart
        self.slotPad = slotPad
        self.padStructure = padStructure
    }

    /// The map of `source`'s data units. Reads its extent map once; reads no data.
    public init(source: any BlockSource, unitSize: UInt64, payloadStart: UInt64, slotPad: UInt64 = 0, padStructure: UInt64 = 0) throws {
        let v = source.size
        let (runs, count) = Self.allocatedRuns(in: try source.extents(in: 0..<v), virtualSize: v, unitSize: unitSize)
        self.init(runs: runs, allocatedCount: count, unitSize: unitSize, virtualSize: v,
                  payloadStart: payloadStart, slotPad: slotPad, padStructure: padStructure)
    }

    /// Units touched by `.data` extents (clipped to `virtualSize`) as runs in virtual order, with
    /// their slot ranks, and the number of units. For a format that must place its structures
    /// before it knows `payloadStart` (qcow2's L2 tables) or that reads other extent kinds from
    /// the same map (VDI's ZERO blocks); the stream VMDK writer too.
    public static func allocatedRuns(in extents: [Extent], virtualSize v: UInt64, unitSize u: UInt64) -> (runs: [PayloadRun], count: UInt64) {
        var runs: [PayloadRun] = []
        var rank: UInt64 = 0
        var pending: (first: UInt64, end: UInt64)?
        for e in extents where e.kind == .data && e.length > 0 {
            let end = min(e.end, v)
            guard e.offset < end else { continue }
            let first = e.offset / u, last = (end - 1) / u
            if let p = pending, first <= p.end {
                pending = (p.first, max(p.end, last + 1))
            } else {
                if let p = pending {
                    runs.append(PayloadRun(firstUnit: p.first, count: p.end - p.first, firstRank: rank))
                    rank += p.end - p.first
                }
                pending = (first, last + 1)
            }
        }
        if let p = pending {
            runs.append(PayloadRun(firstUnit: p.first, count: p.end - p.first, firstRank: rank))
            rank += p.end - p.first
        }
        return (runs, rank)
    }

    // MARK: Lookups

    /// Binary search: the first run for which `isPast` holds (runs are sorted by unit and by rank
    /// alike, so `isPast` is false then true along them); `runs.count` if none.
    @inline(__always)
    private func firstRun(where isPast: (PayloadRun) -> Bool) -> Int {
        var lo = 0, hi = runs.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if isPast(runs[mid]) { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }

    /// The run holding slot `k`; `runs.count` when `k >= allocatedCount`.
    public func runIndex(containingRank k: UInt64) -> Int { firstRun { $0.firstRank + $0.count > k } }

    /// The slot of virtual unit `p`, or nil when it is not allocated.
    public func rank(ofUnit p: UInt64) -> UInt64? {
        let i = firstRun { $0.firstUnit + $0.count > p }
        guard i < runs.count, runs[i].firstUnit <= p else { return nil }
        return runs[i].firstRank + p - runs[i].firstUnit
    }

    /// The virtual unit stored in slot `k` (k < allocatedCount).
    public func unit(ofRank k: UInt64) -> UInt64 {
        let r = runs[runIndex(containingRank: k)]
        return r.firstUnit + k - r.firstRank
    }

    /// The file offset of slot `k`'s data.
    public func dataOffset(ofRank k: UInt64) -> UInt64 { payloadStart + k * slotSize + slotPad }

    /// The file offset holding virtual byte `offset`, or nil when its unit has no slot.
    public func fileOffset(ofVirtual offset: UInt64) -> UInt64? {
        guard offset < virtualSize else { return nil }
        return rank(ofUnit: offset / unitSize).map { dataOffset(ofRank: $0) + offset % unitSize }
    }

    /// Slot lookups for ascending units (filling a BAT, grain tables, a block map): one binary
    /// search at the start, then a step along the runs.
    public struct RankCursor {
        let runs: [PayloadRun]
        var i: Int
        /// The slot of unit `p`, or nil; `p` must not decrease from one call to the next.
        public mutating func rank(ofUnit p: UInt64) -> UInt64? {
            while i < runs.count && runs[i].firstUnit + runs[i].count <= p { i += 1 }
            guard i < runs.count, runs[i].firstUnit <= p else { return nil }
            return runs[i].firstRank + p - runs[i].firstUnit
        }
    }

    /// A cursor for units from `p` on.
    public func rankCursor(fromUnit p: UInt64) -> RankCursor {
        RankCursor(runs: runs, i: firstRun { $0.firstUnit + $0.count > p })
    }

    // MARK: Walks over file ranges in [payloadStart, payloadEnd)

    /// File bytes `[offset, offset+buffer.count)` ⊂ `[payloadStart, payloadEnd)`: data read from
    /// `source` straight into `buffer` (within a run of back-to-back slots, file order is virtual
    /// order, so its whole overlap is one source read), zeros past the virtual size, and each
    /// pad's bytes from `fillPad(offsetInSlot, bytes)`, which only a padded layout calls.
    public func read(from source: any BlockSource, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer,
                     fillPad: (UInt64, UnsafeMutableRawBufferPointer) -> Void = { _, _ in }) throws {
        guard let base = buffer.baseAddress else { return }
        var done = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let remaining = UInt64(buffer.count - done)
            let out = base + done
            let n: Int, v: UInt64
            if slotPad == 0 {
                let k = (pos - payloadStart) / unitSize
                let run = runs[runIndex(containingRank: k)]
                let runFileEnd = payloadStart + (run.firstRank + run.count) * unitSize
                n = Int(min(remaining, runFileEnd - pos))
                v = run.firstUnit * unitSize + (pos - payloadStart - run.firstRank * unitSize)
            } else {
                let k = (pos - payloadStart) / slotSize
                let inSlot = pos - payloadStart - k * slotSize
                if inSlot < slotPad {
                    let p = Int(min(remaining, slotPad - inSlot))
                    fillPad(inSlot, UnsafeMutableRawBufferPointer(start: out, count: p))
                    done += p
                    continue
                }
                let inUnit = inSlot - slotPad
                n = Int(min(remaining, unitSize - inUnit))
                v = unit(ofRank: k) * unitSize + inUnit
            }
            let dataCount = v < virtualSize ? Int(min(UInt64(n), virtualSize - v)) : 0
            if dataCount > 0 { try source.read(at: v, into: UnsafeMutableRawBufferPointer(start: out, count: dataCount)) }
            // The last unit's padding past the virtual size.
            if dataCount < n { (out + dataCount).initializeMemory(as: UInt8.self, repeating: 0, count: n - dataCount) }
            done += n
        }
    }

    /// The extent map of the slots overlapping `r` (clipped to it), appended to `out` uncoalesced:
    /// a pad's zeros and structure, then the unit's data as the source's extents say (`.data`
    /// stays data, zero and absent become `.zero`), then `.zero` past the virtual size.
    public func appendExtents(of source: any BlockSource, in r: Range<UInt64>, to out: inout [Extent]) throws {
        func add(_ lo: UInt64, _ hi: UInt64, _ kind: ExtentKind) {
            let a = max(lo, r.lowerBound), b = min(hi, r.upperBound)
            if a < b { out.append(Extent(offset: a, length: b - a, kind: kind)) }
        }
        guard r.upperBound > payloadStart else { return }
        let start = max(r.lowerBound, payloadStart)
        var k = (start - payloadStart) / slotSize
        guard k < allocatedCount else { return }
        var ri = runIndex(containingRank: k)
        while k < allocatedCount {
            let slot = payloadStart + k * slotSize
            if slot >= r.upperBound { break }
            while runs[ri].firstRank + runs[ri].count <= k { ri += 1 }
            let run = runs[ri]
            // Back-to-back slots: the rest of the run is one file range; padded: this slot only.
            let slots = slotPad == 0 ? run.firstRank + run.count - k : 1
            if slotPad > 0 {
                add(slot, slot + slotPad - padStructure, .zero)
                add(slot + slotPad - padStructure, slot + slotPad, .data)
            }
            let fileLo = slot + slotPad, fileHi = fileLo + slots * slotSize - slotPad
            let lo = max(fileLo, start), hi = min(fileHi, r.upperBound)
            if lo < hi {
                let vLo = (run.firstUnit + k - run.firstRank) * unitSize + (lo - fileLo)
                let vHi = vLo + (hi - lo)
                let vDataHi = min(vHi, virtualSize)
                if vLo < vDataHi {
                    for e in try source.extents(in: vLo..<vDataHi) {
                        let a = max(e.offset, vLo), b = min(e.end, vDataHi)
                        if a < b { add(lo + (a - vLo), lo + (b - vLo), e.kind == .data ? .data : .zero) }
                    }
                }
                if vDataHi < vHi { add(lo + (max(vDataHi, vLo) - vLo), hi, .zero) }
            }
            k += slots
        }
    }

    /// `range` ⊂ `[payloadStart, payloadEnd)` as the source's file spans (data) and zeros (past
    /// the virtual size); nil when it touches a pad (synthesized) or the source's range is not a
    /// file's.
    public func fileSpans(of source: any FileBackedSource, in range: Range<UInt64>) -> [FileSpan]? {
        var out: [FileSpan] = []
        var pos = range.lowerBound
        while pos < range.upperBound {
            let n: UInt64, v: UInt64
            if slotPad == 0 {
                let run = runs[runIndex(containingRank: (pos - payloadStart) / unitSize)]
                let runFileEnd = payloadStart + (run.firstRank + run.count) * unitSize
                n = min(range.upperBound, runFileEnd) - pos
                v = run.firstUnit * unitSize + (pos - payloadStart - run.firstRank * unitSize)
            } else {
                let k = (pos - payloadStart) / slotSize
                let inSlot = pos - payloadStart - k * slotSize
                guard inSlot >= slotPad else { return nil }
                n = min(range.upperBound - pos, slotSize - inSlot)
                v = unit(ofRank: k) * unitSize + (inSlot - slotPad)
            }
            let dataCount = v < virtualSize ? min(n, virtualSize - v) : 0
            if dataCount > 0 {
                guard let spans = source.fileSpans(in: v..<v + dataCount) else { return nil }
                out += spans
            }
            if dataCount < n { out.append(.zeros(length: n - dataCount)) }
            pos += n
        }
        return out
    }
}
