import BlockCore

/// How VHD and VDI keep a plugin pointer blob in their reserved pointer areas: a 16-byte frame
/// then the blob, zeros after it; an area without the magic holds no pointer.
///
/// | Offset | Size | Field |
/// |---|---|---|
/// | 0 | 8 | magic `BLPOINTR` |
/// | 8 | 4 | u32 LE blob length N |
/// | 12 | 4 | reserved, 0 |
/// | 16 | N | the blob |
public enum PointerAreaFrame {
    public static let magic: [UInt8] = Array("BLPOINTR".utf8)
    public static let headerSize = 16

    /// The framed bytes of `blob` (empty for an empty blob: the area stays zeros).
    public static func frame(_ blob: [UInt8]) -> [UInt8] {
        guard !blob.isEmpty else { return [] }
        var out = magic + [UInt8](repeating: 0, count: 8)
        out.putLE32(UInt32(blob.count), at: 8)
        return out + blob
    }

    /// The blob in an area's bytes (read from file offset `at`), nil when the area holds none.
    public static func parse(_ area: [UInt8], at: UInt64, format: String) throws -> [UInt8]? {
        guard area.count >= headerSize, Array(area[0..<8]) == magic else { return nil }
        let n = Int(area.le32(8))
        guard n <= area.count - headerSize else {
            throw FormatError(format, "pointer area", at: at + 8, "pointer length \(n) exceeds the area's \(area.count - headerSize) bytes")
        }
        return Array(area[headerSize..<headerSize + n])
    }
}
