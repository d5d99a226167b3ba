/// Shrinks a finding's input while its verdict holds: cuts at structure boundaries and halves
/// (shortest first), then zeroes chunks from large to 512 bytes; checksums are recomputed after
/// each step (except in --dumb mode, whose inputs never had them fixed).
public enum Minimizer {
    public static func minimize(_ input: [UInt8], format: any FuzzFormat, mode: MutationMode, budget: Int,
                                holds: ([UInt8]) throws(FuzzError) -> Bool) throws(FuzzError) -> ([UInt8], Int) {
        var best = input, runs = 0
        func fixed(_ b: [UInt8]) -> [UInt8] {
            guard mode == .structured else { return b }
            var c = b; ChecksumFixer.fix(&c, format.map(c).checksums); return c
        }
        // 1. Length: structure boundaries and fractions, shortest first.
        var cuts = Set(format.map(best).boundaries.filter { $0 > 0 && $0 < best.count })
        for d in [2, 4, 8, 16] { cuts.insert(best.count * (d - 1) / d); cuts.insert(best.count / d) }
        for cut in cuts.sorted() where cut < best.count && runs < budget {
            let c = fixed(Array(best[0..<cut]))
            runs += 1
            if try holds(c) { best = c; break }
        }
        // 2. Zero chunks that are not zero yet.
        var chunk = max(512, best.count / 8)
        while chunk >= 512, runs < budget {
            var at = 0
            while at < best.count, runs < budget {
                let end = min(best.count, at + chunk)
                if best[at..<end].contains(where: { $0 != 0 }) {
                    var c = best
                    for i in at..<end { c[i] = 0 }
                    c = fixed(c)
                    runs += 1
                    if c != best, try holds(c) { best = c }
                }
                at = end
            }
            chunk /= 2
        }
        return (best, runs)
    }
}
