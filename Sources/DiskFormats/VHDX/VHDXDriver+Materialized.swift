import BlockCore

extension VHDXDriver {
    /// The pointer is the data of BootLab's user metadata item: no checksum covers the metadata
    /// region's items (MS-VHDX 2.6: only headers, region tables and log entries carry one).
    public func pointerRetirementEdits(path: String, retire: ([UInt8]) throws -> [UInt8]) throws -> [ByteEdit] {
        let f = try VHDXFile.open(path: path)
        guard let region = f.regionTable.entry(VHDX.metadataRegion) else { return [] }
        let raw = try RawFile(path: path)
        let tableBytes = try raw.read(at: region.fileOffset, count: Int(min(UInt64(VHDXMetadataTable.tableSize), UInt64(region.length))))
        let table = try VHDXMetadataTable.parse(tableBytes, at: region.fileOffset, regionLength: UInt64(region.length))
        guard let e = table.entries.first(where: { $0.itemID == PluginPointerPlacement.vhdxItemID }), e.length > 0 else { return [] }
        let at = region.fileOffset + UInt64(e.offset)
        let blob = try raw.read(at: at, count: Int(e.length))
        return [try ByteEdit.replacing(blob, at: at, with: retire(blob), format: name)]
    }
}

extension ByteEdit {
    /// `old` at `offset` becomes `new`; a retire function that changes the blob's length is a
    /// programmer error reported as a typed error (the layout must not move).
    static func replacing(_ old: [UInt8], at offset: UInt64, with new: [UInt8], format: String) throws -> ByteEdit {
        guard new.count == old.count else {
            throw FormatError(format, "plugin pointer", at: offset, "a retired pointer must keep its length (\(old.count) bytes, got \(new.count))")
        }
        return ByteEdit(offset: offset, old: old, new: new)
    }
}
