import BlockCore

/// A VDI the reader recognises but does not read.
public enum VDIUnsupportedError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Undo and differencing images need their parent.
    case needsParent(type: String, parent: String)

    public var description: String {
        switch self {
        case let .needsParent(type, parent):
            return "VDI: \(type) images are not supported (parent UUID \(parent)); merge it into its parent first"
        }
    }
}

/// A dynamic or static VDI as a read-only block source: the virtual disk inside the file.
///
/// The size is the header's disk size (VirtualBox's; QEMU rounds an odd size up to a sector).
/// Block map entries below 0xFFFFFFFE are slots `dataOffset + entry·(blockSize + extra) + extra`;
/// FREE (0xFFFFFFFF) reads as zeros and is reported `.absent`, ZERO (0xFFFFFFFE) reads as
/// zeros and is reported `.zero`.
public final class VDIFile: BlockSource, @unchecked Sendable {
    // @unchecked: immutable after init; the backing source is thread-safe.
    public let path: String?
    public let header: VDIHeader
    /// One entry per block of the disk.
    public let blockMap: [UInt32]
    public let size: UInt64
    public let fileSize: UInt64
    let backing: any BlockSource

    public var blockSize: UInt32 { header.blockSize }
    public var allocatedBytes: UInt64 { UInt64(blockMap.filter(VDI.isAllocated).count) * UInt64(header.blockSize) }

    public static func open(path: String) throws -> VDIFile {
        try VDIFile(source: try RawFile(path: path), path: path)
    }

    public init(source: any BlockSource, path: String? = nil) throws {
        backing = source
        self.path = path
        let fs = source.size
        fileSize = fs
        let fmt = VDI.formatName
        guard fs >= UInt64(VDI.headerAreaSize) else {
            throw FormatError(fmt, "file", at: 0, "file size \(fs) is below the 512-byte header")
        }
        let h = try VDIHeader.parse(try source.read(at: 0, count: VDI.headerAreaSize))
        header = h
        switch h.imageType {
        case .normal?, .fixed?: break
        case .undo?, .diff?:
            throw VDIUnsupportedError.needsParent(type: h.imageType!.name, parent: h.linkUUID.description)
        case nil:
            throw FormatError(fmt, "header", at: 0x4C, "image type \(h.imageTypeRaw) is not 1 (dynamic), 2 (static), 3 (undo) or 4 (differencing)")
        }
        let bs = UInt64(h.blockSize), extra = UInt64(h.blockExtra)
        guard bs >= VDI.sector, bs % VDI.sector == 0, bs <= 256 << 20 else {
            throw FormatError(fmt, "header", at: 0x178, "block size \(h.blockSize) is not a multiple of 512 between 512 and 256 MiB")
        }
        guard extra <= 1 << 20 else {
            throw FormatError(fmt, "header", at: 0x17C, "block extra data \(h.blockExtra) exceeds 1 MiB")
        }
        guard h.diskSize <= UInt64(h.blocksInImage) * bs else {
            throw FormatError(fmt, "header", at: 0x170, "disk size \(h.diskSize) exceeds \(h.blocksInImage) blocks of \(bs) bytes")
        }
        let mapAt = UInt64(h.blockMapOffset)
        let mapBytes = UInt64(h.blocksInImage) * 4
        guard mapAt >= UInt64(VDI.headerAreaSize), mapAt <= fs, mapBytes <= fs - mapAt else {
            throw FormatError(fmt, "header", at: 0x154, "block map of \(h.blocksInImage) entries at \(VDI.hex(mapAt)) lies outside the file (size \(VDI.hex(fs)))")
        }
        size = h.diskSize
        let needed = (h.diskSize + bs - 1) / bs
        guard needed <= VDI.maxBlocks else {
            throw FormatError(fmt, "header", at: 0x170, "disk size \(h.diskSize) needs \(needed) blocks; at most \(VDI.maxBlocks) are read")
        }
        let raw = try source.read(at: mapAt, count: Int(needed * 4))
        var map = [UInt32](repeating: 0, count: Int(needed))
        let dataAt = UInt64(h.dataOffset)
        for p in 0..<Int(needed) {
            let e = raw.le32(p * 4)
            map[p] = e
            guard VDI.isAllocated(e) else { continue }
            let off = dataAt + UInt64(e) * (bs + extra) + extra
            let need = min(bs, h.diskSize - UInt64(p) * bs)
            guard off <= fs, need <= fs - off else {
                throw FormatError(fmt, "block map entry \(p)", at: mapAt + UInt64(p) * 4,
                                  "block \(p) in slot \(e) at \(VDI.hex(off)) lies outside the file (size \(VDI.hex(fs)))")
            }
        }
        blockMap = map
    }

    /// File offset of virtual block `p`'s data, or nil when it has none.
    public func dataOffset(ofBlock p: Int) -> UInt64? {
        let e = blockMap[p]
        guard VDI.isAllocated(e) else { return nil }
        let bs = UInt64(header.blockSize), extra = UInt64(header.blockExtra)
        return UInt64(header.dataOffset) + UInt64(e) * (bs + extra) + extra
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        let bs = UInt64(header.blockSize)
        let base = buffer.baseAddress!
        var done = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let p = Int(pos / bs), inBlock = pos % bs
            let n = Int(min(UInt64(buffer.count - done), bs - inBlock))
            let out = UnsafeMutableRawBufferPointer(start: base + done, count: n)
            if let d = dataOffset(ofBlock: p) {
                try backing.read(at: d + inBlock, into: out)
            } else {
                out.initializeMemory(as: UInt8.self, repeating: 0)
            }
            done += n
        }
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        let bs = UInt64(header.blockSize)
        var out: [Extent] = []
        var pos = r.lowerBound
        while pos < r.upperBound {
            let p = pos / bs
            let end = min(r.upperBound, (p + 1) * bs)
            let e = blockMap[Int(p)]
            out.append(Extent(offset: pos, length: end - pos, kind: VDI.isAllocated(e) ? .data : (e == VDI.blockZero ? .zero : .absent)))
            pos = end
        }
        return coalesce(out)
    }

    /// The facts `bootlab info` prints.
    public func info(path: String) -> ImageInfo {
        let h = header
        return ImageInfo(format: VDI.formatName, path: path, fields: [
            InfoField("virtual_size", .bytes(size)),
            InfoField("file_size", .bytes(fileSize)),
            InfoField("type", .string(h.imageType?.name ?? "?")),
            InfoField("block_size", .bytes(UInt64(h.blockSize))),
            InfoField("allocated_bytes", .bytes(allocatedBytes)),
            InfoField("blocks", .integer(UInt64(h.blocksInImage))),
            InfoField("blocks_allocated", .integer(UInt64(h.blocksAllocated))),
            InfoField("block_map_offset", .integer(UInt64(h.blockMapOffset))),
            InfoField("data_offset", .integer(UInt64(h.dataOffset))),
            InfoField("image_uuid", .string(h.imageUUID.description)),
            InfoField("modification_uuid", .string(h.modificationUUID.description)),
            InfoField("text", .string(h.textString.trimmingNewlines())),
        ])
    }
}

extension String {
    fileprivate func trimmingNewlines() -> String {
        var s = Substring(self)
        while s.last == "\n" { s = s.dropLast() }
        return String(s)
    }
}
