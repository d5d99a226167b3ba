import BlockCore

/// A VHD the reader recognises but does not read.
public enum VHDUnsupportedError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Differencing disks (type 4) need their parent; BootLab does not read them.
    case differencing(parentName: String, parentUniqueID: String)

    public var description: String {
        switch self {
        case let .differencing(name, id):
            return "VHD: differencing disks are not supported (parent \"\(name)\", unique id \(id)); merge it into its parent first (qemu-img cannot read them either)"
        }
    }
}

/// A fixed or dynamic VHD as a read-only block source: the virtual disk inside the file.
///
/// The footer is taken from the end of the file (its authoritative place), or — for a dynamic
/// disk whose trailing footer is damaged — from the copy at offset 0, as QEMU does. The size
/// is the footer's current size (as Hyper-V, VirtualBox and libvhdi read it; QEMU reads the
/// CHS capacity for unknown creators, equal to it in every file qemu-img writes without
/// force_size). Sector bitmaps are not consulted: a block's data is read as QEMU reads it.
public final class VHDFile: BlockSource, @unchecked Sendable {
    // @unchecked: immutable after init; the backing source is thread-safe.
    public let path: String?
    public let footer: VHDFooter
    /// Where `footer` was read (the end of the file, or 0 when only the copy was valid).
    public let footerOffset: UInt64
    public let dynamicHeader: VHDDynamicHeader?
    /// Dynamic: one entry per block of the virtual disk (the sector of the block's bitmap).
    public let bat: [UInt32]
    public let size: UInt64
    public let fileSize: UInt64
    /// Dynamic: bytes of a block's sector bitmap (data follows it).
    public let bitmapLength: UInt64
    let backing: any BlockSource

    public var diskType: VHD.DiskType { footer.diskType ?? .fixed }
    public var blockSize: UInt32 { dynamicHeader?.blockSize ?? 0 }
    /// Bytes of allocated blocks (dynamic), or the virtual size (fixed).
    public var allocatedBytes: UInt64 {
        guard let h = dynamicHeader else { return size }
        return UInt64(bat.filter { $0 != VHD.unallocated }.count) * UInt64(h.blockSize)
    }

    public static func open(path: String) throws -> VHDFile {
        try VHDFile(source: try RawFile(path: path), path: path)
    }

    public init(source: any BlockSource, path: String? = nil) throws {
        backing = source
        self.path = path
        let fs = source.size
        fileSize = fs
        let fmt = VHD.formatName
        guard fs >= UInt64(VHD.footerSize) else {
            throw FormatError(fmt, "file", at: 0, "file size \(fs) is below one 512-byte footer")
        }
        // Footer: the last 512 bytes, else the copy at 0 (dynamic disks).
        let tailAt = fs - UInt64(VHD.footerSize)
        var chosen: (VHDFooter, UInt64)?
        var tailError: FormatError?
        do {
            let f = try VHDFooter.parse(try source.read(at: tailAt, count: VHD.footerSize), at: tailAt)
            if f.checksumIsValid { chosen = (f, tailAt) } else {
                tailError = FormatError(fmt, "footer", at: tailAt + 64, "checksum \(VHD.hex32(f.checksum)) does not match computed \(VHD.hex32(f.computedChecksum))")
            }
        } catch let e as FormatError { tailError = e }
        if chosen == nil, tailAt > 0, let head = try? VHDFooter.parse(try source.read(at: 0, count: VHD.footerSize), at: 0, name: "footer copy"),
           head.checksumIsValid, head.diskType == .dynamic || head.diskType == .differencing {
            chosen = (head, 0)
        }
        guard let (f, at) = chosen else { throw tailError! }
        footer = f
        footerOffset = at
        let v = f.currentSize
        size = v
        guard v % VHD.sector == 0 else {
            throw FormatError(fmt, "footer", at: at + 48, "current size \(v) is not a multiple of 512")
        }
        switch f.diskType {
        case .none:
            throw FormatError(fmt, "footer", at: at + 60, "disk type \(f.diskTypeRaw) is not fixed (2), dynamic (3) or differencing (4)")
        case .fixed:
            guard at == tailAt, v <= tailAt else {
                throw FormatError(fmt, "footer", at: at + 48, "fixed disk of current size \(v) needs \(v + 512) bytes, the file has \(fs)")
            }
            dynamicHeader = nil
            bat = []
            bitmapLength = 0
        case .dynamic, .differencing:
            let ho = f.dataOffset
            guard ho <= fs, UInt64(VHD.dynamicHeaderSize) <= fs - ho else {
                throw FormatError(fmt, "footer", at: at + 16, "data offset \(VHD.hex(ho)) puts the dynamic disk header past the end of the file (\(VHD.hex(fs)))")
            }
            let h = try VHDDynamicHeader.parse(try source.read(at: ho, count: VHD.dynamicHeaderSize), at: ho)
            guard h.checksumIsValid else {
                throw FormatError(fmt, "dynamic disk header", at: ho + 36, "checksum \(VHD.hex32(h.checksum)) does not match computed \(VHD.hex32(h.computedChecksum))")
            }
            if f.diskType == .differencing {
                throw VHDUnsupportedError.differencing(parentName: h.parentNameText,
                                                       parentUniqueID: VHDFooter.uuidText(h.parentUniqueID))
            }
            let bs = UInt64(h.blockSize)
            guard bs >= VHD.sector, bs % VHD.sector == 0, bs <= 256 << 20 else {
                throw FormatError(fmt, "dynamic disk header", at: ho + 32, "block size \(h.blockSize) is not a multiple of 512 between 512 and 256 MiB")
            }
            let needed = (v + bs - 1) / bs
            guard needed <= UInt64(h.maxTableEntries) else {
                throw FormatError(fmt, "dynamic disk header", at: ho + 28, "max table entries \(h.maxTableEntries) cannot map \(v) bytes in blocks of \(bs) (\(needed) needed)")
            }
            guard needed <= VHD.maxTableEntries else {
                throw FormatError(fmt, "footer", at: at + 48, "current size \(v) needs \(needed) blocks of \(bs) bytes; at most \(VHD.maxTableEntries) are read")
            }
            let batBytes = UInt64(h.maxTableEntries) * 4
            guard h.tableOffset <= fs, batBytes <= fs - h.tableOffset else {
                throw FormatError(fmt, "dynamic disk header", at: ho + 16, "BAT of \(h.maxTableEntries) entries at \(VHD.hex(h.tableOffset)) extends past the end of the file (\(VHD.hex(fs)))")
            }
            let raw = try source.read(at: h.tableOffset, count: Int(needed * 4))
            var entries = [UInt32](repeating: 0, count: Int(needed))
            let bm = (bs / VHD.sector / 8 + 511) / 512 * 512
            for p in 0..<Int(needed) {
                let e = VHD.be32(raw, p * 4)
                entries[p] = e
                guard e != VHD.unallocated else { continue }
                let off = UInt64(e) * VHD.sector
                let need = bm + min(bs, v - UInt64(p) * bs)
                guard off <= fs, need <= fs - off else {
                    throw FormatError(fmt, "BAT entry \(p)", at: h.tableOffset + UInt64(p) * 4,
                                      "block \(p) at sector \(VHD.hex(UInt64(e))) (offset \(VHD.hex(off))) extends past the end of the file (\(VHD.hex(fs)))")
                }
            }
            dynamicHeader = h
            bat = entries
            bitmapLength = bm
        }
    }

    /// File offset of virtual block `p`'s first data byte, or nil when unallocated.
    public func dataOffset(ofBlock p: Int) -> UInt64? {
        let e = bat[p]
        return e == VHD.unallocated ? nil : UInt64(e) * VHD.sector + bitmapLength
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        guard let h = dynamicHeader else {
            try backing.read(at: offset, into: buffer)
            return
        }
        let bs = UInt64(h.blockSize)
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

    /// Allocated blocks are data, unallocated ones absent; a fixed disk passes on the file's map.
    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        guard let h = dynamicHeader else { return try backing.extents(in: r) }
        let bs = UInt64(h.blockSize)
        var out: [Extent] = []
        var pos = r.lowerBound
        while pos < r.upperBound {
            let p = pos / bs
            let end = min(r.upperBound, (p + 1) * bs)
            out.append(Extent(offset: pos, length: end - pos, kind: bat[Int(p)] == VHD.unallocated ? .absent : .data))
            pos = end
        }
        return coalesce(out)
    }
}

extension VHDFooter {
    static func uuidText(_ b: [UInt8]) -> String {
        var f = VHDFooter(dataOffset: 0, creatorApp: [], creatorVersion: 0, creatorHostOS: [], size: 0,
                          geometry: VHDGeometry(cylinders: 0, heads: 0, sectorsPerTrack: 0), diskType: .fixed, uniqueID: b)
        f.uniqueID = b
        return f.uniqueIDText
    }
}
