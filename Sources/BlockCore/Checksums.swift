import CCryptoShim

/// CRC-32C (Castagnoli) through Crypto++ — the checksum of every VHDX and backup-image structure.
///
/// One value is one computation: `update` it with the pieces in order, then `finalize`. It holds
/// one public `CryptoPP::CRC32C` object, because that class cannot resume from an earlier result
/// (the only "continue from a seed" entry point in libcryptopp is an undeclared SSE4.2 routine
/// that returns garbage without SSE4.2 and does not exist on aarch64).
public struct CRC32C: ~Copyable {
    private let ctx: OpaquePointer

    public init() {
        guard let ctx = bl_crc32c_new() else {
            // Only an allocation failure gets here, which Swift itself treats as fatal.
            fatalError("CRC-32C: \(String(cString: bl_last_error()))")
        }
        self.ctx = ctx
    }

    deinit { bl_crc32c_free(ctx) }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        CRC32C.check(bl_crc32c_update(ctx, bytes.baseAddress, bytes.count))
    }

    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    /// The CRC of everything updated so far; the computation restarts from empty afterwards.
    public mutating func finalize() -> UInt32 {
        var out: UInt32 = 0
        CRC32C.check(bl_crc32c_final(ctx, &out))
        return out
    }

    /// CRC of one buffer.
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var out: UInt32 = 0
        check(bl_crc32c(bytes.baseAddress, bytes.count, &out))
        return out
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }

    /// CRC of `bytes` with the 4-byte field at `fieldOffset` taken as zero — how VHDX ("computed
    /// over the entire structure with the Checksum field set to zero", MS-VHDX 2.2.2) and our
    /// own formats checksum a structure that contains its own checksum. One computation over
    /// three pieces: the bytes before the field, four zero bytes, the bytes after it.
    public static func checksum(_ bytes: [UInt8], zeroingFieldAt fieldOffset: Int) -> UInt32 {
        precondition(fieldOffset >= 0 && fieldOffset + 4 <= bytes.count, "checksum field outside structure")
        var crc = CRC32C()
        bytes.withUnsafeBytes { raw in
            crc.update(UnsafeRawBufferPointer(rebasing: raw[0..<fieldOffset]))
            crc.update([0, 0, 0, 0])
            crc.update(UnsafeRawBufferPointer(rebasing: raw[(fieldOffset + 4)...]))
        }
        return crc.finalize()
    }

    /// The shim fails only when Crypto++ throws, which for CRC-32C means memory exhaustion.
    private static func check(_ status: Int32) {
        guard status == 0 else { fatalError("CRC-32C: \(String(cString: bl_last_error()))") }
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
