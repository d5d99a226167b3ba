import BlockCore

extension VDIDriver {
    /// The blob inside the reserved pointer area (no checksum in a VDI header).
    public func pointerRetirementEdits(path: String, retire: ([UInt8]) throws -> [UInt8]) throws -> [ByteEdit] {
        guard let blob = try readPluginPointer(path: path) else { return [] }
        let at = VDILayout.pointerAreaOffset + UInt64(PointerAreaFrame.headerSize)
        return [try ByteEdit.replacing(blob, at: at, with: retire(blob), format: name)]
    }
}
