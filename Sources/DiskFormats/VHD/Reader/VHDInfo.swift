import BlockCore

extension VHDFile {
    /// The facts `bootlab info` prints.
    public func info(path: String) -> ImageInfo {
        let f = footer
        var fields: [InfoField] = [
            InfoField("virtual_size", .bytes(size)),
            InfoField("file_size", .bytes(fileSize)),
            InfoField("type", .string(diskType.name)),
            InfoField("allocated_bytes", .bytes(allocatedBytes)),
            InfoField("creator", .string(VHD.fourCC(f.creatorApp))),
            InfoField("creator_version", .string(VHD.hex32(f.creatorVersion))),
            InfoField("creator_host_os", .string(VHD.fourCC(f.creatorHostOS))),
            InfoField("geometry", .string(f.geometry.description)),
            InfoField("geometry_size", .bytes(f.geometry.sectors * VHD.sector)),
            InfoField("unique_id", .string(f.uniqueIDText)),
            InfoField("footer_offset", .integer(footerOffset)),
        ]
        if let h = dynamicHeader {
            fields.append(InfoField("block_size", .bytes(UInt64(h.blockSize))))
            fields.append(InfoField("bat_offset", .integer(h.tableOffset)))
            fields.append(InfoField("bat_entries", .integer(UInt64(h.maxTableEntries))))
        }
        return ImageInfo(format: VHD.formatName, path: path, fields: fields)
    }
}
