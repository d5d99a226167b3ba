import BlockCore

extension QCOW2Driver {
    /// The blob in the area BootLab's header extension names (u32 BE length, then the blob; no
    /// checksum in qcow2).
    public func pointerRetirementEdits(path: String, retire: ([UInt8]) throws -> [UInt8]) throws -> [ByteEdit] {
        let raw = try RawFile(path: path)
        guard let blob = try QCOW2PluginPointerArea.find(in: raw), let area = try QCOW2PluginPointerArea.areaOffset(in: raw) else { return [] }
        return [try ByteEdit.replacing(blob, at: area + 4, with: retire(blob), format: name)]
    }
}

extension QCOW2PluginPointerArea {
    /// The pointer area's offset named by BootLab's header extension (nil: no extension);
    /// `find(in:)` has checked it lies in the file.
    static func areaOffset(in source: any BlockSource) throws -> UInt64? {
        let head = try source.read(at: 0, count: Int(min(source.size, 4096)))
        var h = try QCOW2Header.parse(head)
        if h.clusterSize > 4096 && source.size > 4096 {
            h = try QCOW2Header.parse(try source.read(at: 0, count: Int(min(source.size, h.clusterSize))))
        }
        guard let e = h.extensions.first(where: { $0.type == QCOW2.extPluginPointer }), e.data.count == extensionLength else { return nil }
        return QCOW2BE.u64(e.data, 0)
    }
}
