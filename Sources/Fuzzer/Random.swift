/// The only source of randomness in `bootlab fuzz`: SplitMix64 over a 64-bit state. A mutant is a
/// function of (campaign seed, run index, corpus), never of a clock, so every run is reproducible.
public struct FuzzRandom: Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// An independent stream for run `stream` of the campaign seeded `seed`.
    public init(seed: UInt64, stream: UInt64) {
        state = seed ^ 0x6A09E667F3BCC909
        state = next() ^ (stream &* 0xD1B54A32D192ED03)
        _ = next()
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0..<n (n > 0).
    public mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(next() % UInt64(n)) }

    /// True with probability `percent`/100.
    public mutating func percent(_ percent: Int) -> Bool { below(100) < percent }

    public mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }

    public mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
}
