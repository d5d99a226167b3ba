import BlockCore

/// Where the structures of a VDI BootLab writes go (docs/formats/vdi.md), and the rules its
/// parameters must meet. VirtualBox's placement (1 MiB alignment, VDI_DATA_ALIGN):
/// ```
/// 0x0       pre-header and header (512)
/// 0x1000    plugin pointer area (0x1F000 bytes, zeros when there is no pointer)
/// 0x100000  block map: blocksInImage × 4 bytes
/// D         data area = the block map's end rounded up to 1 MiB; allocated block k at D + k·1 MiB
/// ```
public struct VDILayout: Sendable, Equatable {
    public static let pointerAreaOffset: UInt64 = 0x1000
    public static let pointerAreaLength = 0x1F000
    public static let blockMapOffset: UInt64 = 0x100000
    /// A bound keeping the data offset a 32-bit field: 256 TiB (2^28 blocks of 1 MiB).
    public static let maxVirtualSize: UInt64 = 256 << 40

    public let virtualSize: UInt64
    public let blockSize: UInt32
    public let blockCount: UInt64
    public let blockMapLength: UInt64
    public let dataOffset: UInt64
    public var payloadStart: UInt64 { dataOffset }

    public init(virtualSize: UInt64, blockSize: UInt32 = VDI.blockSize) throws {
        guard virtualSize > 0 else { throw VDISynthesisError.emptyDisk }
        guard virtualSize % VDI.sector == 0 else { throw VDISynthesisError.virtualSizeNotSectorMultiple(size: virtualSize) }
        guard virtualSize <= Self.maxVirtualSize else { throw VDISynthesisError.virtualSizeTooLarge(size: virtualSize, max: Self.maxVirtualSize) }
        guard blockSize == VDI.blockSize else { throw VDISynthesisError.invalidBlockSize(blockSize) }
        self.virtualSize = virtualSize
        self.blockSize = blockSize
        let bs = UInt64(blockSize)
        blockCount = (virtualSize + bs - 1) / bs
        blockMapLength = blockCount * 4
        dataOffset = (Self.blockMapOffset + blockMapLength + VDI.dataAlign - 1) / VDI.dataAlign * VDI.dataAlign
    }

    public func blockOffset(rank: UInt64) -> UInt64 { dataOffset + rank * UInt64(blockSize) }
    public func fileSize(allocated: UInt64) -> UInt64 { dataOffset + allocated * UInt64(blockSize) }
}

/// Why a VDI cannot be written with the given disk and options.
public enum VDISynthesisError: Error, CustomStringConvertible, Equatable, Sendable {
    case emptyDisk
    case virtualSizeNotSectorMultiple(size: UInt64)
    case virtualSizeTooLarge(size: UInt64, max: UInt64)
    case invalidBlockSize(UInt32)
    case invalidSeed(count: Int)
    case pointerTooLarge(count: Int, capacity: Int)
    case unsupportedSubformat(String)

    public var description: String {
        switch self {
        case .emptyDisk: return "VDI: a virtual disk of size 0 cannot be written"
        case let .virtualSizeNotSectorMultiple(s): return "VDI: virtual size \(s) is not a multiple of 512 bytes; pad the input first"
        case let .virtualSizeTooLarge(s, m): return "VDI: virtual size \(s) exceeds the limit of \(m) bytes (\(ByteSize.format(m)))"
        case let .invalidBlockSize(b): return "VDI: block size \(b) is not 1 MiB (the only size QEMU opens and VirtualBox's default)"
        case let .invalidSeed(n): return "VDI: the UUID seed must be 16 bytes, got \(n)"
        case let .pointerTooLarge(n, cap): return "VDI: plugin pointer of \(n) bytes does not fit the \(cap)-byte pointer area"
        case let .unsupportedSubformat(s): return "VDI: subformat \(s) is not supported (only dynamic)"
        }
    }
}
