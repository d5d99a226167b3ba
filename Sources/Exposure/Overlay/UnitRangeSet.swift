/// A set of unit indices kept as sorted, disjoint, non-adjacent ranges — the overlay's map of
/// which units hold written data. Small for the usual case (a guest writes in clusters), and
/// queries cost a binary search, so a 1 TiB disk with a few writes stays cheap.
public struct UnitRangeSet: Sendable, Equatable {
    public private(set) var ranges: [Range<UInt64>] = []

    public init() {}

    public var isEmpty: Bool { ranges.isEmpty }
    public var count: UInt64 { ranges.reduce(0) { $0 + UInt64($1.count) } }

    /// Index of the first range whose upper bound is above `unit`.
    private func firstIndex(endingAfter unit: UInt64) -> Int {
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound <= unit { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    public func contains(_ unit: UInt64) -> Bool {
        let i = firstIndex(endingAfter: unit)
        return i < ranges.count && ranges[i].contains(unit)
    }

    /// `r` split into maximal runs that are wholly inside (`true`) or outside (`false`) the set.
    public func runs(in r: Range<UInt64>) -> [(range: Range<UInt64>, present: Bool)] {
        guard !r.isEmpty else { return [] }
        var out: [(Range<UInt64>, Bool)] = []
        var pos = r.lowerBound
        var i = firstIndex(endingAfter: pos)
        while pos < r.upperBound {
            if i < ranges.count, ranges[i].lowerBound <= pos {
                let end = min(ranges[i].upperBound, r.upperBound)
                out.append((pos..<end, true))
                pos = end
                i += 1
            } else {
                let end = min(i < ranges.count ? ranges[i].lowerBound : r.upperBound, r.upperBound)
                out.append((pos..<end, false))
                pos = end
            }
        }
        return out
    }

    /// The parts of `r` not yet in the set.
    public func missing(in r: Range<UInt64>) -> [Range<UInt64>] {
        runs(in: r).filter { !$0.present }.map(\.range)
    }

    /// Adds `r`, merging with neighbours.
    public mutating func insert(_ r: Range<UInt64>) {
        guard !r.isEmpty else { return }
        // Ranges that overlap or touch r merge into it.
        var lo = r.lowerBound, hi = r.upperBound
        var i = firstIndex(endingAfter: lo == 0 ? 0 : lo - 1)
        if i < ranges.count, ranges[i].upperBound < lo { i += 1 }
        var j = i
        while j < ranges.count, ranges[j].lowerBound <= hi {
            lo = min(lo, ranges[j].lowerBound)
            hi = max(hi, ranges[j].upperBound)
            j += 1
        }
        ranges.replaceSubrange(i..<j, with: [lo..<hi])
    }
}
