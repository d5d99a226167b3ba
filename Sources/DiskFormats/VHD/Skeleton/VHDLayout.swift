import BlockCore

/// Where every structure of a VHD BootLab writes goes (docs/formats/vhd.md, "Layout"), and the
/// rules its parameters must meet. One placement for the view (hence `convert -O vhd`, the
/// plugin file and `create`).
///
/// Dynamic:
/// ```
/// 0x0      footer copy (512)
/// 0x200    dynamic disk header (1024)
/// 0x1000   plugin pointer area (0x1F000 bytes, zeros when there is no pointer)
/// 0x20000  BAT: maxTableEntries × 4 bytes, rounded up to 512 with 0xFF (as qemu-img)
/// D        payloadStart = the BAT's end rounded up to 4 KiB
/// D + k·S  slot of the k-th allocated block: zeros, the sector bitmap (its last 512·n bytes
///          before the data), then the block's data at a 4 KiB boundary; S = pad + blockSize
/// end      footer (512)
/// ```
/// Fixed: the virtual disk's bytes, then the footer. Nothing precedes the payload
/// (`payloadStart` 0, empty skeleton), and the footer lies after it.
public struct VHDLayout: Sendable, Equatable {
    public static let dynamicHeaderOffset: UInt64 = 0x200
    public static let pointerAreaOffset: UInt64 = 0x1000
    public static let pointerAreaLength = 0x1F000
    public static let batOffset: UInt64 = 0x20000

    public let subformat: VHDSubformat
    public let virtualSize: UInt64
    public let blockSize: UInt32
    /// BAT entries: one per block of the virtual disk (0 for fixed).
    public let blockCount: UInt64
    /// BAT bytes: entries × 4 rounded up to a sector.
    public let batLength: UInt64
    public let payloadStart: UInt64
    /// Sector bitmap bytes per block (one bit per sector, rounded up to a sector).
    public let bitmapLength: UInt64
    /// Bytes before a block's data in its slot (the bitmap at the end of them): 4 KiB-aligned data.
    public let slotPad: UInt64
    public var slotSize: UInt64 { slotPad + UInt64(blockSize) }

    /// Validates the parameters and places the structures.
    public init(subformat: VHDSubformat, virtualSize: UInt64, blockSize: UInt32 = VHD.defaultBlockSize) throws {
        guard virtualSize > 0 else { throw VHDSynthesisError.emptyDisk }
        guard virtualSize % VHD.sector == 0 else {
            throw VHDSynthesisError.virtualSizeNotSectorMultiple(size: virtualSize)
        }
        self.subformat = subformat
        self.virtualSize = virtualSize
        self.blockSize = blockSize
        switch subformat {
        case .fixed:
            // Azure's rule for uploaded VHDs: a whole number of MiB.
            guard virtualSize % VHD.mib == 0 else {
                throw VHDSynthesisError.fixedSizeNotMiBMultiple(size: virtualSize, next: (virtualSize / VHD.mib + 1) * VHD.mib)
            }
            guard virtualSize <= VHD.maxFixedSize else { throw VHDSynthesisError.virtualSizeTooLarge(size: virtualSize, max: VHD.maxFixedSize) }
            blockCount = 0
            batLength = 0
            payloadStart = 0
            bitmapLength = 0
            slotPad = 0
        case .dynamic:
            guard blockSize.nonzeroBitCount == 1, blockSize >= 512 << 10, blockSize <= 256 << 20 else {
                throw VHDSynthesisError.invalidBlockSize(blockSize)
            }
            guard virtualSize <= VHD.maxDynamicSize else { throw VHDSynthesisError.virtualSizeTooLarge(size: virtualSize, max: VHD.maxDynamicSize) }
            let bs = UInt64(blockSize)
            blockCount = (virtualSize + bs - 1) / bs
            batLength = (blockCount * 4 + 511) / 512 * 512
            payloadStart = (Self.batOffset + batLength + 4095) / 4096 * 4096
            bitmapLength = (bs / VHD.sector / 8 + 511) / 512 * 512
            slotPad = (bitmapLength + 4095) / 4096 * 4096
            // Every block allocated: the last bitmap must still be addressable by a 32-bit BAT entry.
            let lastBitmap = payloadStart + (blockCount - 1) * (slotPad + bs) + slotPad - bitmapLength
            guard lastBitmap / VHD.sector < UInt64(VHD.unallocated) else {
                throw VHDSynthesisError.virtualSizeTooLarge(size: virtualSize, max: VHD.maxDynamicSize)
            }
        }
    }

    /// File offset of the slot of the `rank`-th allocated block.
    public func slotOffset(rank: UInt64) -> UInt64 { payloadStart + rank * slotSize }
    /// File offset of that block's sector bitmap (the BAT entry × 512).
    public func bitmapOffset(rank: UInt64) -> UInt64 { slotOffset(rank: rank) + slotPad - bitmapLength }
    /// File offset of that block's first data byte.
    public func dataOffset(rank: UInt64) -> UInt64 { slotOffset(rank: rank) + slotPad }
    /// The BAT entry of that block: its bitmap's sector.
    public func batEntry(rank: UInt64) -> UInt32 { UInt32(bitmapOffset(rank: rank) / VHD.sector) }
    /// The file's size with `allocated` blocks.
    public func fileSize(allocated: UInt64) -> UInt64 {
        subformat == .fixed ? virtualSize + UInt64(VHD.footerSize) : payloadStart + allocated * slotSize + UInt64(VHD.footerSize)
    }
}

/// `-o subformat=`: dynamic (sparse, the exposed form) or fixed (raw bytes + footer).
public enum VHDSubformat: String, Sendable, CaseIterable {
    case dynamic
    case fixed
}

/// Why a VHD cannot be written with the given disk and options.
public enum VHDSynthesisError: Error, CustomStringConvertible, Equatable, Sendable {
    case emptyDisk
    case virtualSizeNotSectorMultiple(size: UInt64)
    case fixedSizeNotMiBMultiple(size: UInt64, next: UInt64)
    case virtualSizeTooLarge(size: UInt64, max: UInt64)
    case invalidBlockSize(UInt32)
    case invalidSeed(count: Int)
    case pointerTooLarge(count: Int, capacity: Int)
    case fixedFooterInvalid(String)

    public var description: String {
        switch self {
        case .emptyDisk:
            return "VHD: a virtual disk of size 0 cannot be written"
        case let .virtualSizeNotSectorMultiple(s):
            return "VHD: virtual size \(s) is not a multiple of 512 bytes; pad the input first"
        case let .fixedSizeNotMiBMultiple(s, next):
            return "VHD: a fixed VHD must have a virtual size that is a whole number of MiB (Azure's rule): \(s) bytes is not; the next valid size is \(next) bytes (\(ByteSize.format(next)))"
        case let .virtualSizeTooLarge(s, m):
            return "VHD: virtual size \(s) exceeds the limit of \(m) bytes (\(ByteSize.format(m)))"
        case let .invalidBlockSize(b):
            return "VHD: block size \(b) must be a power of two between 512 KiB and 256 MiB"
        case let .invalidSeed(n):
            return "VHD: the identifier seed must be 16 bytes, got \(n)"
        case let .pointerTooLarge(n, cap):
            return "VHD: plugin pointer of \(n) bytes does not fit the \(cap)-byte pointer area"
        case let .fixedFooterInvalid(why):
            return "VHD: fixed disk footer fails Azure's checks: \(why)"
        }
    }
}
