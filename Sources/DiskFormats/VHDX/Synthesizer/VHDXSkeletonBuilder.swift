import BlockCore

/// The fixed, small structures of a synthesized dynamic VHDX, built once (vhdx-notes §9a).
///
/// Everything here is a pure function of its inputs, which is what makes the file deterministic
/// and lets the view serve any byte range without materializing the file.
enum VHDXSkeletonBuilder {
    // Placement of the recipe (§9a), the same structure Hyper-V writes: log 1 MiB at 1 MiB,
    // metadata 1 MiB at 2 MiB, BAT at 3 MiB, payload right after the BAT.
    static let logOffset: UInt64 = 0x100000
    static let logLength: UInt32 = 0x100000
    static let metadataOffset: UInt64 = 0x200000
    static let metadataLength: UInt32 = 0x100000
    static let batOffset: UInt64 = 0x300000

    /// File type identifier (MS-VHDX 2.2.1): `vhdxfile` then the creator as UTF-16LE, NUL-padded
    /// to 512 bytes. Only the first 520 bytes are meaningful; the rest of the 64 KiB is zero.
    static func fileIdentifier(creator: String) -> [UInt8] {
        var out = VHDX.fileSignature
        let units = Array(creator.utf16.prefix(256))
        for u in units { out.appendLE16(u) }
        out += [UInt8](repeating: 0, count: 8 + 512 - out.count)
        return out
    }

    /// A 4 KiB header (MS-VHDX 2.2.2) with its CRC-32C over all 4096 bytes [SPEC:268].
    static func header(sequence: UInt64, fileWrite: GUID, dataWrite: GUID, log: GUID = .zero) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: VHDX.headerSize)
        h.put(VHDX.headerSignature, at: 0)
        h.putLE64(sequence, at: 8)
        h.put(fileWrite.bytes, at: 16)
        h.put(dataWrite.bytes, at: 32)
        h.put(log.bytes, at: 48)
        h.putLE16(0, at: 64)           // LogVersion must be 0
        h.putLE16(1, at: 66)           // Version must be 1
        h.putLE32(logLength, at: 68)
        h.putLE64(logOffset, at: 72)
        h.putLE32(CRC32C.checksum(h, zeroingFieldAt: 4), at: 4)
        return h
    }

    /// The 64 KiB region table (MS-VHDX 2.2.3): BAT first, then metadata, both Required — the
    /// order and flags of Hyper-V's own files (QEMU writes Required=0, LP#1749016).
    static func regionTable(batLength: UInt64) -> [UInt8] {
        var t = [UInt8](repeating: 0, count: VHDX.regionTableSize)
        t.put(VHDX.regionSignature, at: 0)
        t.putLE32(2, at: 8)
        func entry(_ i: Int, _ guid: GUID, _ offset: UInt64, _ length: UInt32) {
            let at = 16 + 32 * i
            t.put(guid.bytes, at: at)
            t.putLE64(offset, at: at + 16)
            t.putLE32(length, at: at + 24)
            t.putLE32(1, at: at + 28)
        }
        entry(0, VHDX.batRegion, batOffset, UInt32(batLength))
        entry(1, VHDX.metadataRegion, metadataOffset, metadataLength)
        t.putLE32(CRC32C.checksum(t, zeroingFieldAt: 4), at: 4)
        return t
    }

    /// One metadata table entry as placed in the region.
    struct MetadataEntry: Sendable, Hashable {
        var id: GUID
        var offset: UInt32
        var length: UInt32
        var flags: UInt32
        var name: String
        var payload: [UInt8]
    }

    /// The metadata region's meaningful prefix (table + items; the rest of the 1 MiB is zero)
    /// and its entries. System items follow the recipe: FP, VS, VID, LSS, PSS packed from
    /// 0x10000; user items follow, 8-byte aligned, each with IsUser set (MS-VHDX 2.6.1.2).
    static func metadata(
        blockSize: UInt32, virtualSize: UInt64, virtualDiskID: GUID,
        logicalSectorSize: UInt32, physicalSectorSize: UInt32, user: [VHDXUserMetadataItem]
    ) throws -> (bytes: [UInt8], entries: [MetadataEntry]) {
        func le32(_ v: UInt32) -> [UInt8] { var b = [UInt8](repeating: 0, count: 4); b.putLE32(v, at: 0); return b }
        func le64(_ v: UInt64) -> [UInt8] { var b = [UInt8](repeating: 0, count: 8); b.putLE64(v, at: 0); return b }
        let required = VHDX.metadataFlagIsRequired
        let virtualDisk = VHDX.metadataFlagIsVirtualDisk
        var items: [(GUID, UInt32, String, [UInt8])] = [
            (VHDX.fileParametersItem, required, "file parameters", le32(blockSize) + le32(0)),
            (VHDX.virtualDiskSizeItem, required | virtualDisk, "virtual disk size", le64(virtualSize)),
            (VHDX.virtualDiskIDItem, required | virtualDisk, "virtual disk ID", virtualDiskID.bytes),
            (VHDX.logicalSectorSizeItem, required | virtualDisk, "logical sector size", le32(logicalSectorSize)),
            (VHDX.physicalSectorSizeItem, required | virtualDisk, "physical sector size", le32(physicalSectorSize)),
        ]
        let systemIDs = Set([VHDX.fileParametersItem, VHDX.virtualDiskSizeItem, VHDX.virtualDiskIDItem,
                             VHDX.logicalSectorSizeItem, VHDX.physicalSectorSizeItem, VHDX.parentLocatorItem])
        guard user.count <= VHDX.maxUserMetadataEntries else {
            throw VHDXSynthesisError.userMetadata("\(user.count) items; at most \(VHDX.maxUserMetadataEntries) allowed")
        }
        var seen = Set<GUID>()
        for u in user {
            guard !systemIDs.contains(u.id) else {
                throw VHDXSynthesisError.userMetadata("item \(u.id) reuses a system item's GUID")
            }
            guard seen.insert(u.id).inserted else {
                throw VHDXSynthesisError.userMetadata("item \(u.id) appears twice ((ItemID, IsUser) must be unique)")
            }
            guard u.flags & ~(VHDX.metadataFlagIsVirtualDisk | VHDX.metadataFlagIsRequired) == 0 else {
                throw VHDXSynthesisError.userMetadata("item \(u.id) has unknown flag bits 0x\(String(u.flags, radix: 16))")
            }
            // MS-VHDX 2.6.1.2 wants Offset 0 for an empty item, but libvhdi rejects any offset
            // below 64 KiB ("item offset value out of bounds"), so an empty item would make
            // the file unreadable there. Empty items carry nothing; refuse them.
            guard !u.bytes.isEmpty else {
                throw VHDXSynthesisError.userMetadata("item \(u.id) is empty; libvhdi cannot open files with empty items")
            }
            guard u.bytes.count <= Int(VHDX.maxMetadataItemLength) else {
                throw VHDXSynthesisError.userMetadata("item \(u.id) is \(u.bytes.count) bytes; at most 1 MiB")
            }
            items.append((u.id, u.flags | VHDX.metadataFlagIsUser, "user", u.bytes))
        }

        var entries: [MetadataEntry] = []
        var next = UInt64(VHDX.minMetadataItemOffset)
        for (i, item) in items.enumerated() {
            let length = UInt64(item.3.count)
            var offset: UInt64 = 0
            if length > 0 {
                if i >= 5 { next = VHDX.roundUp(next, to: 8) }
                offset = next
                next += length
                guard next <= UInt64(metadataLength) else {
                    throw VHDXSynthesisError.userMetadata("items need \(next) bytes; the metadata region holds \(metadataLength)")
                }
            }
            entries.append(MetadataEntry(id: item.0, offset: UInt32(offset), length: UInt32(length),
                                         flags: item.1, name: item.2, payload: item.3))
        }

        var bytes = [UInt8](repeating: 0, count: Int(VHDX.roundUp(next, to: 4096)))
        bytes.put(VHDX.metadataSignature, at: 0)
        bytes.putLE16(UInt16(entries.count), at: 10)
        for (i, e) in entries.enumerated() {
            let at = 32 + 32 * i
            bytes.put(e.id.bytes, at: at)
            bytes.putLE32(e.offset, at: at + 16)
            bytes.putLE32(e.length, at: at + 20)
            bytes.putLE32(e.flags, at: at + 24)
            if e.length > 0 { bytes.put(e.payload, at: Int(e.offset)) }
        }
        return (bytes, entries)
    }
}
