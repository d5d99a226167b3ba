import BlockCore

/// `info` for VHDX files: recognised by the `vhdxfile` signature, never by name.
public struct VHDXInfoProbe: ImageInfoProbe {
    public init() {}
    public var formatName: String { VHDX.formatName }
    public func matches(head: [UInt8]) -> Bool { head.count >= 8 && Array(head[0..<8]) == VHDX.fileSignature }
    public func info(path: String) throws -> ImageInfo {
        let f = try VHDXFile.open(path: path)
        return f.info(path: path)
    }
}

extension VHDXFile {
    /// The facts `bootlab info` prints.
    public func info(path: String) -> ImageInfo {
        let md = metadata
        let h = header
        let type = md.hasParent ? "differencing" : (md.leaveBlocksAllocated ? "fixed" : "dynamic")
        var fields: [InfoField] = [
            InfoField("virtual_size", .bytes(md.virtualSize)),
            InfoField("file_size", .bytes(backing.size)),
            InfoField("type", .string(type)),
            InfoField("block_size", .bytes(UInt64(md.blockSize))),
            InfoField("logical_sector_size", .integer(UInt64(md.logicalSectorSize))),
            InfoField("physical_sector_size", .integer(UInt64(md.physicalSectorSize))),
            InfoField("allocated_bytes", .bytes(allocatedBytes)),
            InfoField("creator", .string(identifier.creator)),
            InfoField("virtual_disk_id", .string(md.virtualDiskID.description)),
            InfoField("data_write_guid", .string(h.dataWriteGuid.description)),
            InfoField("file_write_guid", .string(h.fileWriteGuid.description)),
            InfoField("header_sequence", .integer(h.sequenceNumber)),
            InfoField("region_table_copy", .integer(UInt64(regionTableCopy))),
            InfoField("log", .object([
                InfoField("state", .string(replayedLog.isEmpty ? "empty" : "needs replay (replayed in memory)")),
                InfoField("entries", .integer(UInt64(replayedLog.count))),
                InfoField("offset", .integer(h.logOffset)),
                InfoField("length", .bytes(UInt64(h.logLength))),
            ])),
        ]
        if md.hasParent, let loc = md.parentLocator {
            var p: [InfoField] = loc.entries.map { InfoField($0.key, .string($0.value)) }
            p.append(InfoField("resolved_path", parentPath.map { .string($0) } ?? .null))
            if let parent {
                p.append(InfoField("parent_data_write_guid", .string(parent.vhdxDataWriteGuid.description)))
                p.append(InfoField("linkage_ok", .bool(true)))  // open() refuses a mismatch
            }
            p.append(InfoField("chain_depth", .integer(UInt64(parentChain.count))))
            fields.append(InfoField("parent", .object(p)))
        }
        if !md.userItems.isEmpty {
            fields.append(InfoField("user_metadata_items", .object(md.userItems.map { InfoField($0.itemID.description, .bytes(UInt64($0.data.count))) })))
        }
        return ImageInfo(format: VHDX.formatName, path: path, fields: fields)
    }
}
