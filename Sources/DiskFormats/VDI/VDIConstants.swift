import BlockCore

/// Constants of VirtualBox's Virtual Disk Image format, version 1.1 (docs/formats/vdi.md).
/// Every multi-byte field is little-endian.
public enum VDI {
    public static let formatName = "vdi"
    /// The pre-header text VirtualBox writes (64 bytes, NUL-padded).
    public static let preHeaderText = "<<< Oracle VM VirtualBox Disk Image >>>\n"
    public static let signature: UInt32 = 0xBEDA_107F
    public static let signatureOffset = 0x40
    public static let version11: UInt32 = 0x0001_0001
    /// Header size VirtualBox writes for v1.1 (from offset 0x48: 400 bytes, LCHS geometry included).
    public static let headerSize11: UInt32 = 0x190
    public static let headerAreaSize = 0x200
    /// VirtualBox's and QEMU's block size; QEMU opens no other.
    public static let blockSize: UInt32 = 1 << 20
    /// Block map entry of a block with no data that reads as zeros (VirtualBox: FREE).
    public static let blockFree: UInt32 = 0xFFFF_FFFF
    /// Block map entry of a block known to be zeros (VirtualBox: ZERO).
    public static let blockZero: UInt32 = 0xFFFF_FFFE
    public static let sector: UInt64 = 512
    /// Most block map entries a reader or checker loads (1 GiB of map: 256 TiB in 1 MiB blocks).
    /// A fixed bound, so a damaged header cannot make us allocate up to the file's size.
    public static let maxBlocks: UInt64 = 1 << 28
    public static let mib: UInt64 = 1 << 20
    /// VirtualBox aligns the block map and the data area to 1 MiB (VDI_DATA_ALIGN).
    public static let dataAlign: UInt64 = 1 << 20

    public enum ImageType: UInt32, Sendable {
        case normal = 1   // dynamic
        case fixed = 2    // static: every block allocated
        case undo = 3
        case diff = 4

        public var name: String {
            switch self {
            case .normal: return "dynamic"
            case .fixed: return "static"
            case .undo: return "undo"
            case .diff: return "differencing"
            }
        }
    }

    static func isAllocated(_ e: UInt32) -> Bool { e < blockZero }
    static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
    static func hex32(_ v: UInt32) -> String {
        let s = String(v, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - s.count)) + s
    }
}
