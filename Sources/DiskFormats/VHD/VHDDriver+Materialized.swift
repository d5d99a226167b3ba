import BlockCore

extension VHDDriver {
    /// Dynamic: the blob inside the reserved pointer area (no checksum covers it). Fixed: the
    /// pointer is not in the file but in the sidecar `<plugin>.pointer`, tied to it by the tag
    /// in the footer's reserved bytes; the copy's footer gets zero reserved bytes (a plain fixed
    /// VHD, as the spec asks) and its checksum recomputed.
    public func pointerRetirementEdits(path: String, retire: ([UInt8]) throws -> [UInt8]) throws -> [ByteEdit] {
        let f = try VHDFile.open(path: path)
        if f.dynamicHeader == nil {
            guard VHDSidecarTag.digest(in: f.footer.reserved) != nil else { return [] }
            let at = f.fileSize - UInt64(VHD.footerSize)
            let old = try RawFile(path: path).read(at: at, count: VHD.footerSize)
            var footer = f.footer
            footer.reserved = []
            return [ByteEdit(offset: at, old: old, new: footer.serialize())]
        }
        guard let blob = try readPluginPointer(path: path) else { return [] }
        let at = VHDLayout.pointerAreaOffset + UInt64(PointerAreaFrame.headerSize)
        return [try ByteEdit.replacing(blob, at: at, with: retire(blob), format: name)]
    }

    /// A fixed VHD plugin's sidecar pointer.
    public var pluginCompanionSuffixes: [String] { [VHDSidecarTag.suffix] }

    /// The footer's cookie at both places: the copy at 0 (dynamic; for a fixed disk the first
    /// bytes of data, harmless) and the footer at the end (how a fixed VHD is recognized).
    public func deferredRanges(fileSize: UInt64) -> [Range<UInt64>] {
        let n = UInt64(VHD.cookie.count)
        guard fileSize >= UInt64(VHD.footerSize) else { return [0..<min(n, fileSize)] }
        let tail = fileSize - UInt64(VHD.footerSize)
        return tail < n ? [0..<n] : [0..<n, tail..<tail + n]
    }
}
