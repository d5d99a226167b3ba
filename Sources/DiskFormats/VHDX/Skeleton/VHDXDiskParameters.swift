import BlockCore

/// The shape of a virtual disk, as the VHDX metadata states it: what `bootlab create`, the
/// writer, the synthesizer and the plugin file are all asked for, checked in one place.
public struct VHDXDiskParameters: Sendable, Hashable {
    public var virtualSize: UInt64
    public var blockSize: UInt32
    public var logicalSectorSize: UInt32
    public var physicalSectorSize: UInt32

    public init(virtualSize: UInt64, blockSize: UInt32, logicalSectorSize: UInt32, physicalSectorSize: UInt32) {
        self.virtualSize = virtualSize
        self.blockSize = blockSize
        self.logicalSectorSize = logicalSectorSize
        self.physicalSectorSize = physicalSectorSize
    }

    /// The one validation of a new disk's parameters, in this order (the first broken rule is
    /// the one reported).
    public func validate() throws(VHDXSynthesisError) {
        // vhdx-notes §5: a zero-size disk needs a ~64 MiB BAT for QEMU to open it; we refuse it.
        guard virtualSize > 0 else { throw .emptyDisk }
        // MS-VHDX 2.6.2.2: "VirtualDiskSize ... MUST be at most 64 terabytes".
        guard virtualSize <= VHDX.maxVirtualSize else { throw .virtualSizeTooLarge(virtualSize) }
        // MS-VHDX 2.6.2.4 and 2.6.2.5: each sector size "MUST be 512 or 4096".
        guard [512, 4096].contains(logicalSectorSize), [512, 4096].contains(physicalSectorSize) else {
            throw .invalidSectorSize(logical: logicalSectorSize, physical: physicalSectorSize)
        }
        // MS-VHDX 2.6.2.2: VirtualDiskSize "MUST be a multiple of the LogicalSectorSize".
        guard virtualSize % UInt64(logicalSectorSize) == 0 else {
            throw .virtualSizeNotSectorMultiple(size: virtualSize, sectorSize: logicalSectorSize)
        }
        // MS-VHDX 2.6.2.1: BlockSize "MUST be at least 1 MB and not greater than 256 MB, and MUST
        // be a power of 2".
        guard blockSize >= VHDX.minBlockSize, blockSize <= VHDX.maxBlockSize, blockSize & (blockSize - 1) == 0 else {
            throw .invalidBlockSize(blockSize)
        }
    }
}
