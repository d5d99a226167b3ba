import BlockCore

/// The first 512 bytes of a VDI: the pre-header (text, signature, version) and the v1.1 header.
///
/// | Offset | Size | Field |
/// |---|---|---|
/// | 0x000 | 64 | text, NUL-padded |
/// | 0x040 | 4 | signature 0xBEDA107F |
/// | 0x044 | 4 | version (0x00010001 = 1.1) |
/// | 0x048 | 4 | header size (0x190; QEMU writes 0x180) |
/// | 0x04C | 4 | image type (1 dynamic, 2 static, 3 undo, 4 differencing) |
/// | 0x050 | 4 | image flags |
/// | 0x054 | 256 | description |
/// | 0x154 | 4 | block map offset |
/// | 0x158 | 4 | data offset |
/// | 0x15C | 16 | legacy geometry: cylinders, heads, sectors, sector size (512) |
/// | 0x16C | 4 | unused |
/// | 0x170 | 8 | disk size |
/// | 0x178 | 4 | block size |
/// | 0x17C | 4 | block extra data size |
/// | 0x180 | 4 | blocks in image |
/// | 0x184 | 4 | blocks allocated |
/// | 0x188 | 16 | image UUID |
/// | 0x198 | 16 | last modification UUID |
/// | 0x1A8 | 16 | link UUID (parent's, differencing only) |
/// | 0x1B8 | 16 | parent modification UUID |
/// | 0x1C8 | 16 | LCHS geometry (v1.1 with header size ≥ 0x190) |
/// | 0x1D8 | 40 | zeros to the end of the sector |
public struct VDIHeader: Sendable, Equatable {
    public var text: [UInt8]
    public var signature: UInt32 = VDI.signature
    public var version: UInt32 = VDI.version11
    public var headerSize: UInt32 = VDI.headerSize11
    public var imageTypeRaw: UInt32
    public var imageFlags: UInt32 = 0
    public var description: [UInt8] = [UInt8](repeating: 0, count: 256)
    public var blockMapOffset: UInt32
    public var dataOffset: UInt32
    public var legacyGeometry: [UInt32] = [0, 0, 0, 512]
    public var diskSize: UInt64
    public var blockSize: UInt32
    public var blockExtra: UInt32 = 0
    public var blocksInImage: UInt32
    public var blocksAllocated: UInt32
    public var imageUUID: GUID
    public var modificationUUID: GUID
    public var linkUUID: GUID = .zero
    public var parentModificationUUID: GUID = .zero
    public var lchsGeometry: [UInt32] = [0, 0, 0, 0]

    public var imageType: VDI.ImageType? { VDI.ImageType(rawValue: imageTypeRaw) }

    public init(imageType: VDI.ImageType, blockMapOffset: UInt32, dataOffset: UInt32, diskSize: UInt64, blockSize: UInt32,
                blocksInImage: UInt32, blocksAllocated: UInt32, imageUUID: GUID, modificationUUID: GUID,
                text: String = VDI.preHeaderText) {
        self.text = Array(text.utf8.prefix(63))
        self.imageTypeRaw = imageType.rawValue
        self.blockMapOffset = blockMapOffset
        self.dataOffset = dataOffset
        self.diskSize = diskSize
        self.blockSize = blockSize
        self.blocksInImage = blocksInImage
        self.blocksAllocated = blocksAllocated
        self.imageUUID = imageUUID
        self.modificationUUID = modificationUUID
    }

    public func serialize() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: VDI.headerAreaSize)
        b.put(Array(text.prefix(63)), at: 0)
        b.putLE32(signature, at: 0x40)
        b.putLE32(version, at: 0x44)
        b.putLE32(headerSize, at: 0x48)
        b.putLE32(imageTypeRaw, at: 0x4C)
        b.putLE32(imageFlags, at: 0x50)
        b.put(Array(description.prefix(256)), at: 0x54)
        b.putLE32(blockMapOffset, at: 0x154)
        b.putLE32(dataOffset, at: 0x158)
        for (i, v) in legacyGeometry.prefix(4).enumerated() { b.putLE32(v, at: 0x15C + 4 * i) }
        b.putLE64(diskSize, at: 0x170)
        b.putLE32(blockSize, at: 0x178)
        b.putLE32(blockExtra, at: 0x17C)
        b.putLE32(blocksInImage, at: 0x180)
        b.putLE32(blocksAllocated, at: 0x184)
        b.put(imageUUID.bytes, at: 0x188)
        b.put(modificationUUID.bytes, at: 0x198)
        b.put(linkUUID.bytes, at: 0x1A8)
        b.put(parentModificationUUID.bytes, at: 0x1B8)
        if headerSize >= 0x190 { for (i, v) in lchsGeometry.prefix(4).enumerated() { b.putLE32(v, at: 0x1C8 + 4 * i) } }
        return b
    }

    /// Parses the first 512 bytes. Throws on a short buffer, a wrong signature or a version
    /// other than 1.1; every other field is returned for the caller to judge.
    public static func parse(_ bytes: [UInt8]) throws -> VDIHeader {
        let v = ByteView(bytes, base: 0, format: VDI.formatName, structure: "header")
        guard v.count >= VDI.headerAreaSize else { throw v.error(at: 0, "truncated: \(v.count) of 512 bytes") }
        let sig = try v.u32(0x40)
        guard sig == VDI.signature else { throw v.error(at: 0x40, "signature \(VDI.hex32(sig)) is not 0xbeda107f") }
        let ver = try v.u32(0x44)
        guard ver == VDI.version11 else {
            throw v.error(at: 0x44, "version \(ver >> 16).\(ver & 0xFFFF) is not supported (only 1.1)")
        }
        var textBytes = try v.slice(0, 64)
        if let nul = textBytes.firstIndex(of: 0) { textBytes = Array(textBytes[..<nul]) }
        var h = VDIHeader(imageType: .normal, blockMapOffset: try v.u32(0x154), dataOffset: try v.u32(0x158),
                          diskSize: try v.u64(0x170), blockSize: try v.u32(0x178), blocksInImage: try v.u32(0x180),
                          blocksAllocated: try v.u32(0x184), imageUUID: GUID(bytes: try v.slice(0x188, 16)),
                          modificationUUID: GUID(bytes: try v.slice(0x198, 16)))
        h.text = textBytes
        h.signature = sig
        h.version = ver
        h.headerSize = try v.u32(0x48)
        h.imageTypeRaw = try v.u32(0x4C)
        h.imageFlags = try v.u32(0x50)
        h.description = try v.slice(0x54, 256)
        h.legacyGeometry = try (0..<4).map { try v.u32(0x15C + 4 * $0) }
        h.blockExtra = try v.u32(0x17C)
        h.linkUUID = GUID(bytes: try v.slice(0x1A8, 16))
        h.parentModificationUUID = GUID(bytes: try v.slice(0x1B8, 16))
        h.lchsGeometry = h.headerSize >= 0x190 ? try (0..<4).map { try v.u32(0x1C8 + 4 * $0) } : [0, 0, 0, 0]
        return h
    }

    public var textString: String { String(decoding: text, as: UTF8.self) }
}
