import BlockCore

/// Creating new VHDX files on disk, laid out as Hyper-V lays them out (vhdx-notes §9a/9b):
/// header section, a 1 MiB log at 1 MiB, metadata at 2 MiB, the BAT at 3 MiB, then data.
/// Every byte derives from the arguments and the seed: no clock, no RNG.
extension VHDXFile {
    public enum CreateError: Error, CustomStringConvertible, Equatable {
        case invalid(String)
        public var description: String {
            switch self { case let .invalid(s): return "VHDX create: \(s)" }
        }
    }

    /// A new dynamic VHDX (all blocks ZERO), opened writable.
    public static func createDynamic(path: String, virtualSize: UInt64, blockSize: UInt32? = nil,
                                     logicalSectorSize: UInt32 = 512, physicalSectorSize: UInt32 = 512,
                                     seed: [UInt8] = [], creator: String = BootLabVersion.creator) throws -> VHDXFile {
        let bs = blockSize ?? VHDX.defaultBlockSize(forVirtualSize: virtualSize)
        try validate(virtualSize: virtualSize, blockSize: bs, logical: logicalSectorSize, physical: physicalSectorSize)
        let fullSeed = seed + Array("dynamic \(virtualSize) \(bs) \(logicalSectorSize) \(physicalSectorSize)".utf8)
        let md = VHDXMetadata(blockSize: bs, virtualSize: virtualSize,
                              virtualDiskID: GUID.derived(seed: fullSeed, label: "vdisk"),
                              logicalSectorSize: logicalSectorSize, physicalSectorSize: physicalSectorSize)
        try writeNew(path: path, metadata: md, seed: fullSeed, creator: creator)
        return try open(path: path, writable: true)
    }

    /// A new differencing VHDX whose parent is the VHDX at `parentPath` (absolute or relative to
    /// the current directory). The child copies the parent's size, block size, sector sizes and
    /// disk ID, and stores parent_linkage (the parent's current DataWriteGuid), relative_path (from
    /// the child's directory) and absolute_win32_path. Opened writable.
    public static func createDifferencing(path: String, parentPath: String, seed: [UInt8] = [],
                                          creator: String = BootLabVersion.creator) throws -> VHDXFile {
        let parent = try open(path: parentPath)
        let pm = parent.metadata
        let (rel, abs) = try VHDXParentPaths.locatorPaths(childPath: path, parentPath: parentPath)
        let linkage = parent.vhdxDataWriteGuid
        let locator = VHDXParentLocator(entries: [
            ("parent_linkage", linkage.bracedLowercase),
            ("relative_path", rel),
            ("absolute_win32_path", abs),
        ])
        let md = VHDXMetadata(blockSize: pm.blockSize, hasParent: true, virtualSize: pm.virtualSize,
                              virtualDiskID: pm.virtualDiskID, logicalSectorSize: pm.logicalSectorSize,
                              physicalSectorSize: pm.physicalSectorSize, parentLocator: locator)
        try writeNew(path: path, metadata: md, seed: seed + linkage.bytes + Array(rel.utf8), creator: creator)
        return try open(path: path, writable: true)
    }

    static func validate(virtualSize: UInt64, blockSize: UInt32, logical: UInt32, physical: UInt32) throws {
        guard blockSize >= VHDX.minBlockSize, blockSize <= VHDX.maxBlockSize, blockSize & (blockSize - 1) == 0 else {
            throw CreateError.invalid("block size \(blockSize) is not a power of 2 from 1 MiB to 256 MiB")
        }
        guard logical == 512 || logical == 4096 else { throw CreateError.invalid("logical sector size \(logical) is not 512 or 4096") }
        guard physical == 512 || physical == 4096 else { throw CreateError.invalid("physical sector size \(physical) is not 512 or 4096") }
        guard virtualSize > 0, virtualSize % UInt64(logical) == 0 else {
            throw CreateError.invalid("virtual size \(virtualSize) must be a non-zero multiple of \(logical)")
        }
        guard virtualSize <= VHDX.maxVirtualSize else { throw CreateError.invalid("virtual size exceeds 64 TiB") }
    }

    /// Writes the skeleton. The file-type identifier is written last, so a half-written file is
    /// never taken for a VHDX.
    static func writeNew(path: String, metadata md: VHDXMetadata, seed: [UInt8], creator: String) throws {
        let geo = VHDX.BATGeometry(virtualSize: md.virtualSize, blockSize: md.blockSize,
                                   logicalSectorSize: md.logicalSectorSize, differencing: md.hasParent)
        let logOffset = VHDX.mib, logLength = VHDX.mib
        let mdOffset = 2 * VHDX.mib, mdLength = VHDX.mib
        let batOffset = 3 * VHDX.mib, batLength = geo.regionLength
        let dataStart = batOffset + batLength
        let sbBlocks = md.hasParent ? geo.sectorBitmapBlocks : 0
        let fileSize = dataStart + sbBlocks * VHDX.mib
        let f = try RawFile.create(path: path, size: fileSize)
        var h = VHDXHeader(sequenceNumber: 1, fileWriteGuid: GUID.derived(seed: seed, label: "file"),
                           dataWriteGuid: GUID.derived(seed: seed, label: "data"),
                           logLength: UInt32(logLength), logOffset: logOffset)
        try f.write(at: VHDX.header1Offset, h.serialize())
        h.sequenceNumber = 2
        try f.write(at: VHDX.header2Offset, h.serialize())
        let rt = VHDXRegionTable(entries: [
            VHDXRegionEntry(guid: VHDX.batRegion, fileOffset: batOffset, length: UInt32(batLength), required: true),
            VHDXRegionEntry(guid: VHDX.metadataRegion, fileOffset: mdOffset, length: UInt32(mdLength), required: true),
        ]).serialize()
        try f.write(at: VHDX.regionTable1Offset, rt)
        try f.write(at: VHDX.regionTable2Offset, rt)
        try f.write(at: mdOffset, md.serialize(regionLength: Int(mdLength)))
        // BAT: unallocated payload blocks are ZERO (2) in a dynamic disk, NOT_PRESENT (0, inherit)
        // in a child; a child gets an SB block for every chunk for libvhdi (notes §9b).
        var bat = [UInt8](repeating: 0, count: Int(geo.totalEntries * 8))
        if !md.hasParent {
            for p in 0..<geo.payloadBlocks { bat.putLE64(VHDX.batEntry(state: 2, fileOffset: 0), at: Int(geo.payloadIndex(p)) * 8) }
        }
        for c in 0..<sbBlocks {
            bat.putLE64(VHDX.batEntry(state: VHDX.sbBlockPresent, fileOffset: dataStart + c * VHDX.mib), at: Int(geo.sectorBitmapIndex(c)) * 8)
        }
        try f.write(at: batOffset, bat)
        try f.flush()
        try f.write(at: 0, VHDXFileIdentifier(creator: creator).serialize())
        try f.flush()
    }
}
