/// A small deterministic all-pairs (pairwise) covering-array generator: given factors, each with
/// a few values, it returns rows (one value index per factor) such that every pair of values of
/// every two factors appears together in at least one row. Far fewer rows than the full product
/// (5 × 2 × 2 × 2 × 5 = 200 combinations become about 25 rows), while no two options are left
/// untested together.
///
/// Greedy, in the spirit of AETG/IPOG but without randomness: each row starts from the smallest
/// pair not yet covered (factor order, then value order); every other factor, in order, takes the
/// value that covers the most still-uncovered pairs with the values already chosen in that row
/// (ties: the lowest value index). Each row covers at least the pair it started from, so the loop
/// ends; the same factors always give the same rows.
public enum AllPairs {
    /// One pair of values of two different factors (`first < second` by factor index).
    public struct Pair: Hashable, Comparable, Sendable, CustomStringConvertible {
        public var first: Int
        public var firstValue: Int
        public var second: Int
        public var secondValue: Int

        public static func < (a: Pair, b: Pair) -> Bool {
            (a.first, a.firstValue, a.second, a.secondValue) < (b.first, b.firstValue, b.second, b.secondValue)
        }

        public var description: String { "f\(first)=\(firstValue) × f\(second)=\(secondValue)" }
    }

    /// Every pair that a covering set must contain, for factors of these sizes.
    public static func allPairs(sizes: [Int]) -> Set<Pair> {
        var out = Set<Pair>()
        for f in sizes.indices {
            for g in sizes.indices where g > f {
                for v in 0..<sizes[f] { for w in 0..<sizes[g] { out.insert(Pair(first: f, firstValue: v, second: g, secondValue: w)) } }
            }
        }
        return out
    }

    /// The pairs a set of rows covers.
    public static func covered(by rows: [[Int]]) -> Set<Pair> {
        var out = Set<Pair>()
        for row in rows {
            for f in row.indices { for g in row.indices where g > f {
                out.insert(Pair(first: f, firstValue: row[f], second: g, secondValue: row[g]))
            } }
        }
        return out
    }

    /// The covering rows for factors of these sizes (each size ≥ 1). With one factor, one row
    /// per value.
    public static func generate(sizes: [Int]) -> [[Int]] {
        precondition(sizes.allSatisfy { $0 >= 1 }, "every factor needs at least one value")
        if sizes.isEmpty { return [] }
        if sizes.count == 1 { return (0..<sizes[0]).map { [$0] } }
        var uncovered = allPairs(sizes: sizes)
        var rows: [[Int]] = []
        while let start = uncovered.min() {
            var row = [Int?](repeating: nil, count: sizes.count)
            row[start.first] = start.firstValue
            row[start.second] = start.secondValue
            for f in sizes.indices where row[f] == nil {
                var best = 0
                var bestGain = -1
                for v in 0..<sizes[f] {
                    var gain = 0
                    for g in sizes.indices where g != f {
                        guard let w = row[g] else { continue }
                        let p = g < f ? Pair(first: g, firstValue: w, second: f, secondValue: v)
                                      : Pair(first: f, firstValue: v, second: g, secondValue: w)
                        if uncovered.contains(p) { gain += 1 }
                    }
                    if gain > bestGain { best = v; bestGain = gain }
                }
                row[f] = best
            }
            let full = row.map { $0! }
            uncovered.subtract(covered(by: [full]))
            rows.append(full)
        }
        return rows
    }
}
