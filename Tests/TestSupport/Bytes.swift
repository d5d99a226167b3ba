/// Deterministic test bytes (xorshift64), so a failure reproduces from its seed. Shared by the
/// test targets that had identical copies (ExposureTests, FrontendsTests).
public struct Bytes: Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed | 1 }
    public mutating func next() -> UInt64 {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return state
    }
    public mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
}
