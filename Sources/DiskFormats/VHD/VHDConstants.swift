import BlockCore

/// Constants and byte helpers of the Microsoft Virtual Hard Disk format (VHD Image Format
/// Specification v1.0, 2006; docs/formats/vhd.md). Every multi-byte field is big-endian.
public enum VHD {
    /// The name `-O`/`-f`, `info` and goldens use. QEMU calls the format "vpc".
    public static let formatName = "vhd"
    public static let qemuFormatName = "vpc"

    public static let sector: UInt64 = 512
    public static let mib: UInt64 = 1 << 20
    public static let footerSize = 512
    public static let dynamicHeaderSize = 1024
    /// Footer cookie (spec: "Cookie", 8 bytes).
    public static let cookie: [UInt8] = Array("conectix".utf8)
    /// Dynamic disk header cookie.
    public static let dynamicCookie: [UInt8] = Array("cxsparse".utf8)
    /// BAT entry of a block with no data in the file.
    public static let unallocated: UInt32 = 0xFFFF_FFFF
    /// Hyper-V's and qemu-img's block size.
    public static let defaultBlockSize: UInt32 = 2 << 20
    /// Largest dynamic disk: qemu's VHD_MAX_SECTORS (2040 GiB); the BAT holds 32-bit sector
    /// offsets, so a dynamic file cannot exceed 2 TiB.
    public static let maxDynamicSize: UInt64 = 0xFF00_0000 * 512
    /// Largest fixed disk we write (no format limit; a bound for sanity and Azure's 32 TiB).
    public static let maxFixedSize: UInt64 = 64 << 40
    /// Most BAT entries a reader or checker loads (64 MiB of table): 2040 GiB in 128 KiB
    /// blocks. A fixed bound, so a damaged header cannot make us allocate up to the file's size.
    public static let maxTableEntries: UInt64 = 1 << 24
    /// The CHS geometry qemu treats as "use the current size" (65535 × 16 × 255).
    public static let maxGeometrySectors: UInt64 = 65535 * 16 * 255

    public enum DiskType: UInt32, Sendable {
        case fixed = 2
        case dynamic = 3
        case differencing = 4

        public var name: String {
            switch self {
            case .fixed: return "fixed"
            case .dynamic: return "dynamic"
            case .differencing: return "differencing"
            }
        }
    }

    // MARK: Big-endian access (bounds checked by the callers)

    @inlinable static func be16(_ b: [UInt8], _ at: Int) -> UInt16 { UInt16(b[at]) << 8 | UInt16(b[at + 1]) }
    @inlinable static func be32(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])
    }
    @inlinable static func be64(_ b: [UInt8], _ at: Int) -> UInt64 { UInt64(be32(b, at)) << 32 | UInt64(be32(b, at + 4)) }
    @inlinable static func put16(_ b: inout [UInt8], _ v: UInt16, _ at: Int) {
        b[at] = UInt8(truncatingIfNeeded: v >> 8); b[at + 1] = UInt8(truncatingIfNeeded: v)
    }
    @inlinable static func put32(_ b: inout [UInt8], _ v: UInt32, _ at: Int) {
        for i in 0..<4 { b[at + i] = UInt8(truncatingIfNeeded: v >> (24 - 8 * UInt32(i))) }
    }
    @inlinable static func put64(_ b: inout [UInt8], _ v: UInt64, _ at: Int) {
        put32(&b, UInt32(truncatingIfNeeded: v >> 32), at); put32(&b, UInt32(truncatingIfNeeded: v), at + 4)
    }

    /// The spec's checksum: the one's complement of the sum of all bytes, the 4 bytes of the
    /// checksum field at `field` counted as zero.
    public static func checksum(_ bytes: [UInt8], fieldAt field: Int) -> UInt32 {
        var sum: UInt32 = 0
        for (i, b) in bytes.enumerated() where i < field || i >= field + 4 { sum &+= UInt32(b) }
        return ~sum
    }

    static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
    static func hex32(_ v: UInt32) -> String {
        let s = String(v, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - s.count)) + s
    }
    /// Four ASCII bytes as text, non-printable bytes as `\xNN`.
    static func fourCC(_ b: [UInt8]) -> String {
        b.map { (0x20...0x7e).contains($0) ? String(UnicodeScalar($0)) : "\\x" + String(format2: $0) }.joined()
    }
}

extension String {
    fileprivate init(format2 b: UInt8) {
        let s = String(b, radix: 16)
        self = s.count < 2 ? "0" + s : s
    }
}
