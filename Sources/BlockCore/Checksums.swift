import CCryptoShim

/// CRC-32C (Castagnoli) through Crypto++ — the checksum of every VHDX and backup-image structure.
public enum CRC32C {
    /// CRC of `bytes`, continued from `seed` (0 starts a new checksum; pass a previous result to
    /// continue over more bytes: crc(a‖b) == checksum(b, seed: checksum(a))).
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        bl_crc32c_update(seed, bytes.baseAddress, bytes.count)
    }

    public static func checksum(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, seed: seed) }
    }

    /// CRC of `bytes` with the 4-byte field at `fieldOffset` taken as zero — how VHDX and our own
    /// format checksum a structure that contains its own checksum.
    public static func checksum(_ bytes: [UInt8], zeroingFieldAt fieldOffset: Int) -> UInt32 {
        precondition(fieldOffset >= 0 && fieldOffset + 4 <= bytes.count, "checksum field outside structure")
        return bytes.withUnsafeBytes { raw in
            var crc = checksum(UnsafeRawBufferPointer(rebasing: raw[0..<fieldOffset]))
            let zeros: [UInt8] = [0, 0, 0, 0]
            crc = zeros.withUnsafeBytes { checksum($0, seed: crc) }
            return checksum(UnsafeRawBufferPointer(rebasing: raw[(fieldOffset + 4)...]), seed: crc)
        }
    }
}

/// SHA-256 through Crypto++.
public struct SHA256: ~Copyable {
    private let ctx: OpaquePointer

    public init() { ctx = bl_sha256_new() }
    deinit { bl_sha256_free(ctx) }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        bl_sha256_update(ctx, bytes.baseAddress, bytes.count)
    }

    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    /// The digest; the hasher is reset afterwards.
    public mutating func finalize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        out.withUnsafeMutableBufferPointer { bl_sha256_final(ctx, $0.baseAddress!) }
        return out
    }

    public static func hash(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        out.withUnsafeMutableBufferPointer { bl_sha256(bytes.baseAddress, bytes.count, $0.baseAddress!) }
        return out
    }

    public static func hash(_ bytes: [UInt8]) -> [UInt8] { bytes.withUnsafeBytes { hash($0) } }

    /// SHA-256 of a whole block source, read in 4 MiB pieces.
    public static func hash(_ source: some BlockSource) throws -> [UInt8] {
        var h = SHA256()
        let chunk = 4 << 20
        var buf = [UInt8](repeating: 0, count: chunk)
        var off: UInt64 = 0
        while off < source.size {
            let n = Int(min(UInt64(chunk), source.size - off))
            try buf.withUnsafeMutableBytes { try source.read(at: off, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n])) }
            buf.withUnsafeBytes { h.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            off += UInt64(n)
        }
        return h.finalize()
    }
}
