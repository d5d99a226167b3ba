import BlockCore

/// Creating new VHDX files on disk, laid out as Hyper-V lays them out (vhdx-notes §9a/9b):
/// header section, a 1 MiB log at 1 MiB, metadata at 2 MiB, the BAT at 3 MiB, then data.
/// Every byte derives from the arguments and the seed: no clock, no RNG.
extension VHDXFile {
    /// A new dynamic VHDX (all blocks ZERO), opened writable.
    public static func createDynamic(path: String, virtualSize: UInt64, blockSize: UInt32? = nil,
                                     logicalSectorSize: UInt32 = 512, physicalSectorSize: UInt32 = 512,
                                     seed: [UInt8] = [], creator: String = BootLabVersion.creator) throws -> VHDXFile {
        let bs = blockSize ?? VHDX.defaultBlockSize(forVirtualSize: virtualSize)
        let parameters = VHDXDiskParameters(virtualSize: virtualSize, blockSize: bs, logicalSectorSize: logicalSectorSize,
                                            physicalSectorSize: physicalSectorSize)
        // Checked before the seed is derived from them (the skeleton checks again, harmlessly).
        try parameters.validate()
        let fullSeed = seed + Array("dynamic \(virtualSize) \(bs) \(logicalSectorSize) \(physicalSectorSize)".utf8)
        let skeleton = try VHDXSkeleton(parameters: parameters, fileWriteGuid: GUID.derived(seed: fullSeed, label: "file"),
                                        dataWriteGuid: GUID.derived(seed: fullSeed, label: "data"),
                                        virtualDiskID: GUID.derived(seed: fullSeed, label: "vdisk"), creator: creator)
        try writeNew(path: path, skeleton: skeleton)
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
        let fullSeed = seed + linkage.bytes + Array(rel.utf8)
        // MS-VHDX 2.6.2.6 / vhdx-notes §9b: every IsVirtualDisk item (size, ID, both sector sizes)
        // is copied from the parent; the block size too, so chunk boundaries agree.
        let skeleton = try VHDXSkeleton(
            parameters: VHDXDiskParameters(virtualSize: pm.virtualSize, blockSize: pm.blockSize,
                                           logicalSectorSize: pm.logicalSectorSize, physicalSectorSize: pm.physicalSectorSize),
            fileWriteGuid: GUID.derived(seed: fullSeed, label: "file"), dataWriteGuid: GUID.derived(seed: fullSeed, label: "data"),
            virtualDiskID: pm.virtualDiskID, creator: creator, parentLocator: locator)
        try writeNew(path: path, skeleton: skeleton)
        return try open(path: path, writable: true)
    }

    /// Writes the skeleton and the BAT of a new file. The file-type identifier is written last,
    /// so a half-written file is never taken for a VHDX.
    static func writeNew(path: String, skeleton sk: VHDXSkeleton) throws {
        let geo = sk.geometry
        let dataStart = sk.payloadStart
        let sbBlocks = sk.hasParent ? geo.sectorBitmapBlocks : 0
        let fileSize = dataStart + sbBlocks * VHDX.mib
        let f = try RawFile.create(path: path, size: fileSize)
        try f.write(at: VHDX.header1Offset, sk.header1)
        try f.write(at: VHDX.header2Offset, sk.header2)
        try f.write(at: VHDX.regionTable1Offset, sk.regionTable)
        try f.write(at: VHDX.regionTable2Offset, sk.regionTable)
        try f.write(at: VHDXSkeleton.metadataOffset, sk.metadataRegion)
        // BAT: unallocated payload blocks are ZERO (2) in a dynamic disk, NOT_PRESENT (0, inherit)
        // in a child; a child gets an SB block for every chunk for libvhdi (notes §9b).
        var bat = [UInt8](repeating: 0, count: Int(geo.totalEntries * 8))
        if !sk.hasParent {
            for p in 0..<geo.payloadBlocks { bat.putLE64(VHDX.batEntry(state: 2, fileOffset: 0), at: Int(geo.payloadIndex(p)) * 8) }
        }
        for c in 0..<sbBlocks {
            bat.putLE64(VHDX.batEntry(state: VHDX.sbBlockPresent, fileOffset: dataStart + c * VHDX.mib), at: Int(geo.sectorBitmapIndex(c)) * 8)
        }
        try f.write(at: VHDXSkeleton.batOffset, bat)
        try f.flush()
        try f.write(at: 0, sk.fileIdentifier)
        try f.flush()
    }
}
