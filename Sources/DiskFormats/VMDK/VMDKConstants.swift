import BlockCore

/// Constants of VMware's Virtual Disk Format 1.1 (hosted sparse extents, stream-optimized
/// extents, text descriptors) as BootLab reads and writes them. docs/formats/vmdk.md.
public enum VMDK {
    public static let formatName = "vmdk"
    /// FormatError's format name.
    public static let errorName = "VMDK"
    public static let sector: UInt64 = 512
    /// `magicNumber` 0x564d444b, stored little-endian: the bytes "KDMV".
    public static let magic: [UInt8] = Array("KDMV".utf8)
    /// The first line of every text descriptor VMware and qemu write.
    public static let descriptorSignature = "# Disk DescriptorFile"

    // Header flags.
    /// Bit 0: the four newline-detection characters are valid.
    public static let flagNewlineTest: UInt32 = 1 << 0
    /// Bit 1: a redundant grain directory and grain tables are kept.
    public static let flagRedundantGrainTable: UInt32 = 1 << 1
    /// Bit 2: a grain table entry of 1 means "zero grain" (version 2 and later).
    public static let flagZeroedGrainGTE: UInt32 = 1 << 2
    /// Bit 16: grains are compressed.
    public static let flagCompressed: UInt32 = 1 << 16
    /// Bit 17: the file carries markers (stream-optimized).
    public static let flagMarkers: UInt32 = 1 << 17

    /// `gdOffset` of a stream-optimized header whose grain directory is found through the footer.
    public static let gdAtEnd: UInt64 = 0xFFFF_FFFF_FFFF_FFFF
    public static let compressionNone: UInt16 = 0
    public static let compressionDeflate: UInt16 = 1

    /// Marker types of stream-optimized files.
    public enum MarkerType: UInt32, Sendable {
        case endOfStream = 0
        case grainTable = 1
        case grainDirectory = 2
        case footer = 3
    }

    /// What we write: 128 sectors per grain (64 KiB), 512 entries per grain table, a 20-sector
    /// embedded descriptor area — the values VMware and qemu-img use.
    public static let defaultGrainSectors: UInt64 = 128
    public static let gtesPerGT: UInt64 = 512
    public static let defaultDescriptorSectors: UInt64 = 20

    // Reader bounds (none of these is reached by a file VMware or qemu writes).
    /// Largest grain accepted: 2^16 sectors (32 MiB).
    public static let maxGrainSectors: UInt64 = 1 << 16
    /// Largest grain table accepted, in entries.
    public static let maxGTEsPerGT: UInt64 = 1 << 16
    /// Largest grain directory accepted, in entries (4 bytes each, 16 MiB).
    public static let maxGDEntries: UInt64 = 1 << 22
    /// Largest virtual disk accepted: 64 TiB (qemu refuses more than 2 TiB per sparse extent).
    public static let maxCapacitySectors: UInt64 = 1 << 37
    /// Largest text descriptor accepted (qemu reads at most 1 MiB).
    public static let maxDescriptorBytes: UInt64 = 1 << 20
    /// Most extent lines in a descriptor.
    public static let maxExtents = 4096

    /// Adapter types the descriptor's `ddb.adapterType` may name (what VMware and qemu accept).
    public static let adapterTypes = ["ide", "buslogic", "lsilogic", "legacyESX"]
}
