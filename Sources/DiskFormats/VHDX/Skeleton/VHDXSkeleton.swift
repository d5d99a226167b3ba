import BlockCore

/// Everything of a VHDX that BootLab lays out before the payload — file identifier, both
/// headers, both region tables, the empty log, the metadata region and the BAT's placement —
/// built in one place (vhdx-notes §9a/§9b) for every writer of VHDX bytes: the synthesizer
/// (`VHDXView`, and through it `convert -O vhdx` and the plugin file) and `create`
/// (`VHDXFile.createDynamic/createDifferencing`). A pure function of its inputs, which is what
/// makes the files deterministic and lets the view serve any byte range without a file.
///
/// Each structure is serialized by its own type in `Structures/` (the same code the reader's
/// tests and the log writer use); this type decides only what goes where. The BAT's *entries*
/// are not here: they depend on the allocation (the view computes them on demand from the
/// source's extents, the writer writes an all-ZERO or child table).
///
/// Another format (VMDK, VHD, qcow2, VDI) gets the same three pieces beside this folder:
/// `Structures/` (parse + serialize), `Skeleton/` (placement + the one parameter validation),
/// and a view/writer that both take the skeleton.
public struct VHDXSkeleton: Sendable {
    // Placement (vhdx-notes §9a), the structure Hyper-V writes: log 1 MiB at 1 MiB, metadata
    // 1 MiB at 2 MiB, BAT at 3 MiB, payload (or a child's sector bitmaps) right after the BAT.
    // MS-VHDX 2.1: every region is 1 MiB-aligned after the 1 MiB header section.
    public static let logOffset: UInt64 = 0x100000
    public static let logLength: UInt32 = 0x100000
    public static let metadataOffset: UInt64 = 0x200000
    public static let metadataLength: UInt32 = 0x100000
    public static let batOffset: UInt64 = 0x300000

    public let parameters: VHDXDiskParameters
    public let hasParent: Bool
    public let geometry: VHDX.BATGeometry
    /// BAT region length: entries × 8 rounded up to 1 MiB (MS-VHDX 2.5).
    public let batLength: UInt64
    /// Where payload (or a child's first sector-bitmap block) begins: everything before it is
    /// this skeleton.
    public var payloadStart: UInt64 { Self.batOffset + batLength }

    public let fileWriteGuid: GUID
    public let dataWriteGuid: GUID
    public let virtualDiskID: GUID
    public let creator: String

    /// The 64 KiB file type identifier.
    public let fileIdentifier: [UInt8]
    /// Header 1 (sequence 1) and header 2 (sequence 2, the current one), 4 KiB each.
    public let header1: [UInt8]
    public let header2: [UInt8]
    /// The 64 KiB region table, written twice.
    public let regionTable: [UInt8]
    /// The metadata region's meaningful prefix (table + items, rounded up to 4 KiB); the rest
    /// of the region is zero.
    public let metadataBytes: [UInt8]
    /// The metadata entries as placed, with their payloads (for layout dumps).
    public let metadataEntries: [MetadataEntry]

    /// One metadata item as placed in the region.
    public typealias MetadataEntry = VHDXMetadataRegion.Item

    /// Builds and checks a skeleton. `parameters` go through the one validation
    /// (`VHDXDiskParameters.validate`); a `parentLocator` makes a differencing disk
    /// (HasParent set, MS-VHDX 2.6.2.1).
    public init(parameters: VHDXDiskParameters, fileWriteGuid: GUID, dataWriteGuid: GUID, virtualDiskID: GUID,
                creator: String, parentLocator: VHDXParentLocator? = nil,
                userMetadata: [VHDXUserMetadataItem] = []) throws(VHDXSynthesisError) {
        try parameters.validate()
        // MS-VHDX 2.2.1: Creator is 256 UTF-16 code units at most (512 bytes).
        let creatorUnits = creator.utf16.count
        guard creatorUnits <= 256 else { throw .creatorTooLong(codeUnits: creatorUnits) }
        self.parameters = parameters
        self.hasParent = parentLocator != nil
        self.fileWriteGuid = fileWriteGuid
        self.dataWriteGuid = dataWriteGuid
        self.virtualDiskID = virtualDiskID
        self.creator = creator
        geometry = VHDX.BATGeometry(virtualSize: parameters.virtualSize, blockSize: parameters.blockSize,
                                    logicalSectorSize: parameters.logicalSectorSize, differencing: hasParent)
        batLength = geometry.regionLength

        fileIdentifier = VHDXFileIdentifier(creator: creator).serialize()
        header1 = Self.header(sequence: 1, fileWrite: fileWriteGuid, dataWrite: dataWriteGuid)
        header2 = Self.header(sequence: 2, fileWrite: fileWriteGuid, dataWrite: dataWriteGuid)
        regionTable = Self.regionTable(batLength: batLength)
        (metadataBytes, metadataEntries) = try Self.metadata(
            parameters: parameters, virtualDiskID: virtualDiskID, parentLocator: parentLocator, user: userMetadata)
    }

    /// The whole metadata region (`metadataLength` bytes), as a writer stores it.
    public var metadataRegion: [UInt8] {
        metadataBytes + [UInt8](repeating: 0, count: Int(Self.metadataLength) - metadataBytes.count)
    }

    /// A 4 KiB header (MS-VHDX 2.2.2): LogGuid zero (an empty log, nothing to replay), the log at
    /// `logOffset`; `VHDXHeader.serialize` sets LogVersion 0, Version 1 and the CRC-32C.
    static func header(sequence: UInt64, fileWrite: GUID, dataWrite: GUID) -> [UInt8] {
        VHDXHeader(sequenceNumber: sequence, fileWriteGuid: fileWrite, dataWriteGuid: dataWrite,
                   logLength: logLength, logOffset: logOffset).serialize()
    }

    /// The 64 KiB region table (MS-VHDX 2.2.3): BAT first, then metadata, both Required — the
    /// order and flags of Hyper-V's own files (QEMU writes Required=0, LP#1749016).
    static func regionTable(batLength: UInt64) -> [UInt8] {
        VHDXRegionTable(entries: [
            VHDXRegionEntry(guid: VHDX.batRegion, fileOffset: batOffset, length: UInt32(batLength), required: true),
            VHDXRegionEntry(guid: VHDX.metadataRegion, fileOffset: metadataOffset, length: metadataLength, required: true),
        ]).serialize()
    }

    /// The metadata region's meaningful prefix and its entries. System items in the QEMU and
    /// Disk2VHD order FP, VS, VID, LSS, PSS packed from 0x10000 (vhdx-notes §4); then the parent
    /// locator of a child (flags IsRequired, MS-VHDX 2.6.2.6) and user items (IsUser set,
    /// MS-VHDX 2.6.1.2), each 8-byte aligned.
    static func metadata(parameters p: VHDXDiskParameters, virtualDiskID: GUID, parentLocator: VHDXParentLocator?,
                         user: [VHDXUserMetadataItem]) throws(VHDXSynthesisError) -> (bytes: [UInt8], entries: [MetadataEntry]) {
        func le32(_ v: UInt32) -> [UInt8] { var b = [UInt8](repeating: 0, count: 4); b.putLE32(v, at: 0); return b }
        func le64(_ v: UInt64) -> [UInt8] { var b = [UInt8](repeating: 0, count: 8); b.putLE64(v, at: 0); return b }
        let required = VHDX.metadataFlagIsRequired
        let virtualDisk = VHDX.metadataFlagIsVirtualDisk
        // MS-VHDX 2.6.2.1: HasParent (bit 1) marks a differencing disk; LeaveBlocksAllocated is
        // never set (every disk here is dynamic or a child).
        let fileParameterFlags: UInt32 = parentLocator == nil ? 0 : VHDX.hasParentFlag
        var items: [VHDXMetadataRegion.Item] = [
            .init(id: VHDX.fileParametersItem, flags: required, name: "file parameters", payload: le32(p.blockSize) + le32(fileParameterFlags)),
            .init(id: VHDX.virtualDiskSizeItem, flags: required | virtualDisk, name: "virtual disk size", payload: le64(p.virtualSize)),
            .init(id: VHDX.virtualDiskIDItem, flags: required | virtualDisk, name: "virtual disk ID", payload: virtualDiskID.bytes),
            .init(id: VHDX.logicalSectorSizeItem, flags: required | virtualDisk, name: "logical sector size", payload: le32(p.logicalSectorSize)),
            .init(id: VHDX.physicalSectorSizeItem, flags: required | virtualDisk, name: "physical sector size", payload: le32(p.physicalSectorSize)),
        ]
        if let parentLocator {
            items.append(.init(id: VHDX.parentLocatorItem, flags: required, name: "parent locator", payload: parentLocator.serialize()))
        }
        let systemIDs = Set([VHDX.fileParametersItem, VHDX.virtualDiskSizeItem, VHDX.virtualDiskIDItem,
                             VHDX.logicalSectorSizeItem, VHDX.physicalSectorSizeItem, VHDX.parentLocatorItem])
        guard user.count <= VHDX.maxUserMetadataEntries else {
            throw .userMetadata("\(user.count) items; at most \(VHDX.maxUserMetadataEntries) allowed")
        }
        var seen = Set<GUID>()
        for u in user {
            guard !systemIDs.contains(u.id) else {
                throw .userMetadata("item \(u.id) reuses a system item's GUID")
            }
            // MS-VHDX 2.6.1.2: the pair (ItemID, IsUser) must be unique.
            guard seen.insert(u.id).inserted else {
                throw .userMetadata("item \(u.id) appears twice ((ItemID, IsUser) must be unique)")
            }
            guard u.flags & ~(VHDX.metadataFlagIsVirtualDisk | VHDX.metadataFlagIsRequired) == 0 else {
                throw .userMetadata("item \(u.id) has unknown flag bits 0x\(String(u.flags, radix: 16))")
            }
            // MS-VHDX 2.6.1.2 wants Offset 0 for an empty item, but libvhdi rejects any offset
            // below 64 KiB ("item offset value out of bounds"), so an empty item would make
            // the file unreadable there. Empty items carry nothing; refuse them.
            guard !u.bytes.isEmpty else {
                throw .userMetadata("item \(u.id) is empty; libvhdi cannot open files with empty items")
            }
            // MS-VHDX 2.6.1.2: Length "MUST be less than or equal to 1 MB".
            guard u.bytes.count <= Int(VHDX.maxMetadataItemLength) else {
                throw .userMetadata("item \(u.id) is \(u.bytes.count) bytes; at most 1 MiB")
            }
            items.append(.init(id: u.id, flags: u.flags | VHDX.metadataFlagIsUser, name: "user", payload: u.bytes))
        }

        let packed = try VHDXMetadataRegion.pack(items, regionLength: Int(metadataLength))
        return (packed.bytes, packed.placed)
    }
}
