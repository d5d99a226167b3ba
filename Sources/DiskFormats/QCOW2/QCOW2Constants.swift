import BlockCore

/// qcow2 constants (QEMU's docs/interop/qcow2.txt). Every multi-byte field is big-endian.
public enum QCOW2 {
    public static let formatName = "qcow2"
    /// "QFI\xfb".
    public static let magic: [UInt8] = [0x51, 0x46, 0x49, 0xFB]
    public static let magicValue: UInt32 = 0x5146_49FB

    /// Header lengths: v2 is always 72 bytes; v3 writes 104 or 112 (with the compression type).
    public static let v2HeaderLength = 72
    public static let v3HeaderLength = 112

    /// cluster_bits accepted by readers: 512 B … 2 MiB (QEMU's MIN/MAX_CLUSTER_BITS).
    public static let minClusterBits: UInt32 = 9
    public static let maxClusterBits: UInt32 = 21
    /// cluster_bits the view writes by default: 64 KiB.
    public static let defaultClusterBits: UInt32 = 16
    /// 16-bit refcounts (refcount_order 4), the only width the view writes.
    public static let refcountOrder: UInt32 = 4

    /// Limits that bound every allocation made from header fields (QEMU's own limits).
    public static let maxL1Bytes: UInt64 = 32 << 20
    public static let maxRefcountTableBytes: UInt64 = 8 << 20
    public static let maxBackingFileNameLength: UInt32 = 1023
    /// The deepest backing chain the reader follows (below the image itself).
    public static let maxBackingDepth = 32
    /// Virtual size bound (QEMU's QCOW_MAX_VIRTUAL_SIZE region: 2^61 with 64 KiB clusters).
    public static let maxVirtualSize: UInt64 = 1 << 61

    // L1/L2 entry bits.
    public static let copiedFlag: UInt64 = 1 << 63
    public static let compressedFlag: UInt64 = 1 << 62
    public static let zeroFlag: UInt64 = 1
    /// Bits 9–55: the host offset of a standard L2 entry, an L1 entry or a refcount table entry.
    public static let offsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
    /// Reserved bits of an L1 entry (1–8 and 56–62).
    public static let l1ReservedMask: UInt64 = 0x7F00_0000_0000_01FE
    /// Reserved bits of a standard L2 entry (1–8 and 56–61).
    public static let l2ReservedMask: UInt64 = 0x3F00_0000_0000_01FE
    public static let refcountTableReservedMask: UInt64 = 0xFF00_0000_0000_01FF

    // Incompatible feature bits.
    public static let incompatDirty: UInt64 = 1 << 0
    public static let incompatCorrupt: UInt64 = 1 << 1
    public static let incompatExternalData: UInt64 = 1 << 2
    public static let incompatCompressionType: UInt64 = 1 << 3
    public static let incompatExtendedL2: UInt64 = 1 << 4
    public static let knownIncompatible: UInt64 = 0x1F

    // Header extension types.
    public static let extEnd: UInt32 = 0
    public static let extBackingFormat: UInt32 = 0xE279_2ACA
    public static let extFeatureNameTable: UInt32 = 0x6803_F857
    public static let extBitmaps: UInt32 = 0x2385_2875
    public static let extFullDiskEncryption: UInt32 = 0x0537_BE77
    public static let extExternalDataFile: UInt32 = 0x4441_5441
    /// BootLab's own extension: the plugin pointer ("BLPT"). QEMU keeps unknown extensions and
    /// otherwise ignores them.
    public static let extPluginPointer: UInt32 = 0x424C_5054

    public static func roundUp(_ v: UInt64, to m: UInt64) -> UInt64 { (v + m - 1) / m * m }
    public static func divRoundUp(_ v: UInt64, _ d: UInt64) -> UInt64 { v == 0 ? 0 : (v - 1) / d + 1 }
    public static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
}

/// Big-endian field access for qcow2 structures (BlockCore's helpers are little-endian).
enum QCOW2BE {
    @inline(__always) static func u16(_ b: [UInt8], _ at: Int) -> UInt16 { UInt16(b[at]) << 8 | UInt16(b[at + 1]) }
    @inline(__always) static func u32(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])
    }
    @inline(__always) static func u64(_ b: [UInt8], _ at: Int) -> UInt64 { UInt64(u32(b, at)) << 32 | UInt64(u32(b, at + 4)) }
    static func put16(_ b: inout [UInt8], _ v: UInt16, at: Int) {
        b[at] = UInt8(truncatingIfNeeded: v >> 8); b[at + 1] = UInt8(truncatingIfNeeded: v)
    }
    static func put32(_ b: inout [UInt8], _ v: UInt32, at: Int) {
        for i in 0..<4 { b[at + i] = UInt8(truncatingIfNeeded: v >> (24 - 8 * UInt32(i))) }
    }
    static func put64(_ b: inout [UInt8], _ v: UInt64, at: Int) {
        for i in 0..<8 { b[at + i] = UInt8(truncatingIfNeeded: v >> (56 - 8 * UInt64(i))) }
    }
    /// `count` big-endian u64 values from `b` starting at `at`.
    static func u64s(_ b: [UInt8], count: Int, at: Int = 0) -> [UInt64] {
        var out = [UInt64](repeating: 0, count: count)
        for i in 0..<count { out[i] = u64(b, at + 8 * i) }
        return out
    }
}

/// Why a qcow2 file cannot be opened although its structures are fine: features the reader
/// refuses on purpose, and problems of the backing chain. Typed, so callers can tell them apart.
public enum QCOW2OpenError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The image keeps its data in another file (incompatible bit 2); refused: an exposed file
    /// must be self-contained, and a data file name is a path chosen by whoever wrote the image.
    case externalDataFile(path: String)
    /// crypt_method ≠ 0 (1 = AES, 2 = LUKS).
    case encrypted(path: String, method: UInt32)
    /// A feature this reader does not implement (extended L2, zstd compression, unknown bits).
    case unsupportedFeature(path: String, feature: String)
    /// The backing file named in the header does not exist.
    case backingMissing(child: String, backing: String)
    /// The backing chain leads back to a file already in it.
    case backingLoop(chain: [String])
    /// The backing chain is deeper than `QCOW2.maxBackingDepth`.
    case backingTooDeep(chain: [String])
    /// The backing format is not one the registry opens.
    case backingFormat(child: String, format: String)
    /// A backing file is named but the image was opened from a source without a resolver.
    case noBackingResolver(backing: String)

    public var description: String {
        switch self {
        case let .externalDataFile(p): return "qcow2: \(p) keeps its data in an external data file; refused"
        case let .encrypted(p, m): return "qcow2: \(p) is encrypted (crypt_method \(m)); refused"
        case let .unsupportedFeature(p, f): return "qcow2: \(p) uses \(f), which this reader does not support"
        case let .backingMissing(c, b): return "qcow2: backing file \(b) of \(c) not found"
        case let .backingLoop(chain): return "qcow2: backing chain loops: \(chain.joined(separator: " -> "))"
        case let .backingTooDeep(chain): return "qcow2: backing chain deeper than \(QCOW2.maxBackingDepth): \(chain.joined(separator: " -> "))"
        case let .backingFormat(c, f): return "qcow2: backing format \(f) of \(c) is not one BootLab opens"
        case let .noBackingResolver(b): return "qcow2: the image names backing file \(b) but was opened without a way to open it"
        }
    }
}
