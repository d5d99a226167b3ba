import CCryptoShim

/// CRC-32 (IEEE 802.3) through Crypto++ — the checksum GPT headers and partition arrays carry
/// (UEFI 2.10 §5.3.2). Check value: CRC-32("123456789") = 0xCBF43926.
public enum CRC32 {
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        bl_crc32(bytes.baseAddress, bytes.count)
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { checksum($0) } }
}
