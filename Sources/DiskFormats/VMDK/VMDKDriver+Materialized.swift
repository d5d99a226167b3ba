import BlockCore

extension VMDKDriver {
    /// The base64 text of `ddb.bootlab.pointer` in the embedded descriptor (no checksum covers
    /// the descriptor): the retired blob has the blob's length, so its base64 has the text's.
    public func pointerRetirementEdits(path: String, retire: ([UInt8]) throws -> [UInt8]) throws -> [ByteEdit] {
        guard let blob = try readPluginPointer(path: path) else { return [] }
        let f = try RawFile(path: path)
        let h = try VMDKSparseHeader.parse(try f.read(at: 0, count: 512), at: 0)
        // readPluginPointer has checked that the descriptor lies inside the file.
        let start = h.descriptorOffset * 512
        let text = try f.read(at: start, count: Int(h.descriptorSize * 512))
        let old = Array(VMDKBase64.encode(blob).utf8)
        let needle = Array("\(Self.pointerKey) = \"".utf8) + old + Array("\"".utf8)
        guard let i = Self.firstIndex(of: needle, in: text) else {
            throw FormatError(VMDK.errorName, "descriptor", at: start, "\(Self.pointerKey) is not written as BootLab writes it (key = \"base64\")")
        }
        let new = Array(VMDKBase64.encode(try retire(blob)).utf8)
        let at = start + UInt64(i + needle.count - 1 - old.count)
        return [try ByteEdit.replacing(old, at: at, with: new, format: name)]
    }

    static func firstIndex(of needle: [UInt8], in hay: [UInt8]) -> Int? {
        guard !needle.isEmpty, needle.count <= hay.count else { return nil }
        var i = 0
        while i + needle.count <= hay.count {
            if hay[i] == needle[0], hay[i..<i + needle.count].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}
