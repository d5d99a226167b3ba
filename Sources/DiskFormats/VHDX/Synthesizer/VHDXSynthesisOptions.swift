import BlockCore

/// An extra user metadata item for a synthesized VHDX (MS-VHDX §2.6.1.2; vhdx-notes §4).
///
/// It appears in the metadata table with IsUser set, after the five system items. The exposure
/// layer stores its "plugin pointer" (where the backup lives) in one of these, so that any VHDX
/// tool sees a valid file while our filter knows where to fetch payload from.
public struct VHDXUserMetadataItem: Sendable, Hashable {
    public var id: GUID
    public var bytes: [UInt8]
    /// Flags besides IsUser, which is always set: IsVirtualDisk (2) and/or IsRequired (4).
    /// Note that QEMU refuses files with an unknown item that has IsRequired (vhdx-notes §4).
    public var flags: UInt32

    public init(id: GUID, bytes: [UInt8], flags: UInt32 = 0) {
        self.id = id
        self.bytes = bytes
        self.flags = flags
    }
}

/// What a synthesized dynamic VHDX looks like, besides its content.
public struct VHDXSynthesisOptions: Sendable, Hashable {
    /// Payload block size: a power of two, 1–256 MiB. `nil` picks qemu-img's default for the
    /// virtual size (8 MiB up to 1 GiB, 16 MiB up to 100 GiB, then 32, then 64 MiB).
    public var blockSize: UInt32?
    /// 512 or 4096. QEMU opens only 512 (vhdx-notes §4); libvhdi and Hyper-V open both.
    public var logicalSectorSize: UInt32
    /// 512 or 4096, at least the logical size. Hyper-V writes 4096; it is advisory.
    public var physicalSectorSize: UInt32
    /// 16 bytes from which every GUID of the file is derived (`GUID.derived(seed:label:)`).
    public var seed: [UInt8]
    /// Diagnostic creator string in the file identifier (at most 256 UTF-16 code units).
    public var creator: String
    /// Extra items stored with IsUser set, in this order.
    public var userMetadata: [VHDXUserMetadataItem]

    public init(
        blockSize: UInt32? = nil,
        logicalSectorSize: UInt32 = 512,
        physicalSectorSize: UInt32 = 4096,
        seed: [UInt8] = [UInt8](repeating: 0, count: 16),
        creator: String = BootLabVersion.creator,
        userMetadata: [VHDXUserMetadataItem] = []
    ) {
        self.blockSize = blockSize
        self.logicalSectorSize = logicalSectorSize
        self.physicalSectorSize = physicalSectorSize
        self.seed = seed
        self.creator = creator
        self.userMetadata = userMetadata
    }

    /// The block size that will be used for a disk of `virtualSize` bytes.
    public func effectiveBlockSize(forVirtualSize virtualSize: UInt64) -> UInt32 {
        blockSize ?? VHDX.defaultBlockSize(forVirtualSize: virtualSize)
    }

    /// A seed that depends only on what the source holds where it is cheap to look: its size,
    /// its extent map and its first MiB (MBR/GPT, disk signature, boot sector). Two different
    /// disks therefore get different Virtual Disk IDs, and the same disk always gets the same one.
    /// Pass an explicit seed when two copies of one disk must be told apart.
    public static func contentSeed(for source: any BlockSource) throws -> [UInt8] {
        var h = SHA256()
        h.update(Array("BootLab VHDX seed v1".utf8))
        var sizeBytes = [UInt8](repeating: 0, count: 8)
        sizeBytes.putLE64(source.size, at: 0)
        h.update(sizeBytes)
        for e in try source.allExtents() {
            var rec = [UInt8](repeating: 0, count: 17)
            rec.putLE64(e.offset, at: 0)
            rec.putLE64(e.length, at: 8)
            rec[16] = e.kind == .data ? 1 : 0
            h.update(rec)
        }
        let head = Int(min(source.size, 1 << 20))
        h.update(try source.read(at: 0, count: head))
        return Array(h.finalize().prefix(16))
    }
}

/// Why a VHDX cannot be synthesized with the given source and options.
public enum VHDXSynthesisError: Error, CustomStringConvertible, Equatable, Sendable {
    case emptyDisk
    case virtualSizeTooLarge(UInt64)
    case virtualSizeNotSectorMultiple(size: UInt64, sectorSize: UInt32)
    case invalidBlockSize(UInt32)
    case invalidSectorSize(logical: UInt32, physical: UInt32)
    case invalidSeed(count: Int)
    case creatorTooLong(codeUnits: Int)
    case userMetadata(String)

    public var description: String {
        switch self {
        case .emptyDisk:
            return "VHDX: a virtual disk of size 0 cannot be synthesized (QEMU cannot open one; vhdx-notes §5)"
        case let .virtualSizeTooLarge(s):
            return "VHDX: virtual size \(s) exceeds the 64 TiB limit"
        case let .virtualSizeNotSectorMultiple(size, sector):
            return "VHDX: virtual size \(size) is not a multiple of the logical sector size \(sector) (MS-VHDX 2.6.2.2); pad the input first"
        case let .invalidBlockSize(b):
            return "VHDX: block size \(b) must be a power of two between 1 MiB and 256 MiB"
        case let .invalidSectorSize(l, p):
            return "VHDX: sector sizes logical \(l) / physical \(p) invalid: each must be 512 or 4096, physical >= logical"
        case let .invalidSeed(n):
            return "VHDX: the GUID seed must be 16 bytes, got \(n)"
        case let .creatorTooLong(n):
            return "VHDX: creator string is \(n) UTF-16 code units; at most 256 fit"
        case let .userMetadata(why):
            return "VHDX: user metadata: \(why)"
        }
    }
}
