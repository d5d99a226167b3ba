import BlockCore

/// Fixed values of MS-VHDX v1, shared by the parser, the synthesizer, the writer and `check`.
/// Section references are to `docs/vhdx-notes` (our digest of MS-VHDX; [SPEC:n] are its lines).
public enum VHDX {
    public static let formatName = "VHDX"

    // §1 Header section [SPEC:207-243]
    public static let fileIdentifierOffset: UInt64 = 0
    public static let header1Offset: UInt64 = 0x10000
    public static let header2Offset: UInt64 = 0x20000
    public static let regionTable1Offset: UInt64 = 0x30000
    public static let regionTable2Offset: UInt64 = 0x40000
    public static let headerSectionSize: UInt64 = 0x100000

    public static let headerSize = 4096          // checksum covers all 4 KiB [SPEC:268]
    public static let regionTableSize = 0x10000  // checksum covers all 64 KiB
    public static let maxRegionEntries: UInt32 = 2047
    public static let maxMetadataEntries: UInt16 = 2047
    public static let maxUserMetadataEntries = 1024
    public static let maxMetadataItemLength: UInt32 = 0x100000
    public static let minMetadataItemOffset: UInt32 = 0x10000

    // Signatures (ASCII bytes, written as is) §0
    public static let fileSignature = Array("vhdxfile".utf8)
    public static let headerSignature = Array("head".utf8)
    public static let regionSignature = Array("regi".utf8)
    public static let metadataSignature = Array("metadata".utf8)
    public static let logEntrySignature = Array("loge".utf8)
    public static let dataDescriptorSignature = Array("desc".utf8)
    public static let zeroDescriptorSignature = Array("zero".utf8)
    public static let dataSectorSignature = Array("data".utf8)

    /// Every object after the header section is aligned to 1 MiB [SPEC:200].
    public static let alignment: UInt64 = 0x100000
    public static let mib: UInt64 = 0x100000
    public static let logSectorSize = 4096

    public static let minBlockSize: UInt32 = 1 << 20
    public static let maxBlockSize: UInt32 = 256 << 20
    /// QEMU's VHDX_MAX_IMAGE_SIZE; the spec's limit is 64 TiB too.
    public static let maxVirtualSize: UInt64 = 64 << 40

    // §3 Region GUIDs
    public static let batRegion = GUID("2DC27766-F623-4200-9D64-115E9BFD4A08")!
    public static let metadataRegion = GUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")!

    // §4 Metadata item GUIDs
    public static let fileParametersItem = GUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")!
    public static let virtualDiskSizeItem = GUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")!
    public static let virtualDiskIDItem = GUID("BECA12AB-B2E6-4523-93EF-C309E000C746")!
    public static let logicalSectorSizeItem = GUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")!
    public static let physicalSectorSizeItem = GUID("CDA348C7-445D-4471-9CC9-E9885251C556")!
    public static let parentLocatorItem = GUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")!
    /// The VHDX parent locator type [SPEC:841-912].
    public static let vhdxParentLocatorType = GUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")!

    // Metadata entry flags [SPEC:770-777]
    public static let metadataFlagIsUser: UInt32 = 1
    public static let metadataFlagIsVirtualDisk: UInt32 = 2
    public static let metadataFlagIsRequired: UInt32 = 4

    // File parameters flags
    public static let leaveBlocksAllocatedFlag: UInt32 = 1
    public static let hasParentFlag: UInt32 = 2

    /// §5 BAT payload-block states.
    public enum PayloadState: UInt8, Sendable, CaseIterable {
        case notPresent = 0
        case undefined = 1
        case zero = 2
        case unmapped = 3
        case unmappedV095 = 5
        case fullyPresent = 6
        case partiallyPresent = 7
    }

    /// §5 Sector-bitmap block states.
    public static let sbBlockNotPresent: UInt8 = 0
    public static let sbBlockPresent: UInt8 = 6

    /// BAT entry = state (bits 0–2) | FileOffsetMB << 20 (bits 20–63); bits 3–19 reserved.
    public static func batEntry(state: UInt8, fileOffset: UInt64) -> UInt64 {
        precondition(fileOffset % mib == 0, "payload offsets are 1 MiB aligned")
        return (fileOffset & 0xFFFF_FFFF_FFF0_0000) | UInt64(state & 7)
    }

    public static func batState(_ entry: UInt64) -> UInt8 { UInt8(entry & 7) }
    public static func batOffset(_ entry: UInt64) -> UInt64 { entry & 0xFFFF_FFFF_FFF0_0000 }
    public static func batReservedBits(_ entry: UInt64) -> UInt64 { entry & 0x000F_FFF8 }

    /// Chunk ratio: payload blocks per sector-bitmap block, 2^23 × LogicalSectorSize / BlockSize.
    public static func chunkRatio(blockSize: UInt32, logicalSectorSize: UInt32) -> UInt64 {
        (UInt64(1) << 23) * UInt64(logicalSectorSize) / UInt64(blockSize)
    }

    /// Geometry of the BAT for a disk [SPEC:536-562].
    public struct BATGeometry: Sendable, Equatable {
        public let virtualSize: UInt64
        public let blockSize: UInt32
        public let logicalSectorSize: UInt32
        public let chunkRatio: UInt64
        public let payloadBlocks: UInt64
        public let sectorBitmapBlocks: UInt64
        /// Entries in the table: dynamic/fixed `PB + floor((PB-1)/CR)`; differencing `SB × (CR+1)`.
        public let totalEntries: UInt64

        public init(virtualSize: UInt64, blockSize: UInt32, logicalSectorSize: UInt32, differencing: Bool) {
            self.virtualSize = virtualSize
            self.blockSize = blockSize
            self.logicalSectorSize = logicalSectorSize
            let cr = VHDX.chunkRatio(blockSize: blockSize, logicalSectorSize: logicalSectorSize)
            chunkRatio = cr
            let pb = (virtualSize + UInt64(blockSize) - 1) / UInt64(blockSize)
            payloadBlocks = pb
            sectorBitmapBlocks = (pb + cr - 1) / cr
            if differencing {
                totalEntries = sectorBitmapBlocks * (cr + 1)
            } else {
                totalEntries = pb == 0 ? 0 : pb + (pb - 1) / cr
            }
        }

        /// BAT index of payload block `p`: `p + floor(p/CR)`.
        public func payloadIndex(_ p: UInt64) -> UInt64 { p + p / chunkRatio }
        /// BAT index of the sector-bitmap entry of chunk `c`: `c × (CR+1) + CR`.
        public func sectorBitmapIndex(_ c: UInt64) -> UInt64 { c * (chunkRatio + 1) + chunkRatio }
        /// BAT region length: entries × 8 rounded up to 1 MiB.
        public var regionLength: UInt64 { VHDX.roundUp(max(totalEntries, 1) * 8, to: VHDX.mib) }
    }

    public static func roundUp(_ v: UInt64, to a: UInt64) -> UInt64 { (v + a - 1) / a * a }

    /// Default block size by virtual size, as qemu-img chooses it (vhdx-notes §8).
    public static func defaultBlockSize(forVirtualSize size: UInt64) -> UInt32 {
        if size > 32 << 40 { return 64 << 20 }
        if size > 100 << 30 { return 32 << 20 }
        if size > 1 << 30 { return 16 << 20 }
        return 8 << 20
    }
}
