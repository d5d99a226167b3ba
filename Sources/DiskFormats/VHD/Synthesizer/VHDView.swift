import BlockCore

/// What a synthesized VHD looks like, besides its content.
public struct VHDSynthesisOptions: Sendable, Hashable {
    public var subformat: VHDSubformat
    /// Dynamic disks' block size (a power of two, 512 KiB – 256 MiB; Hyper-V and qemu-img: 2 MiB).
    public var blockSize: UInt32
    /// 16 bytes from which the footer's unique id derives.
    public var seed: [UInt8]
    /// Opaque bytes stored, framed (`PointerAreaFrame`), in the dynamic layout's pointer area
    /// (docs/formats/vhd.md); empty: none.
    public var pointer: [UInt8]

    public init(subformat: VHDSubformat = .dynamic, blockSize: UInt32 = VHD.defaultBlockSize,
                seed: [UInt8] = [UInt8](repeating: 0, count: 16), pointer: [UInt8] = []) {
        self.subformat = subformat
        self.blockSize = blockSize
        self.seed = seed
        self.pointer = pointer
    }
}

/// The footer identity BootLab writes. The creator application is "win " (Hyper-V's): it is
/// the value every reader takes to mean "the size is the footer's current size" — QEMU uses the
/// CHS geometry's (smaller) capacity for any creator it does not list ("vpc ", "qemu", or ours),
/// while Hyper-V, Azure, VirtualBox and libvhdi always use the current size. See vhd.md.
public enum VHDIdentity {
    public static let creatorApp: [UInt8] = Array("win ".utf8)
    public static let creatorVersion: UInt32 = 0x000A_0000
    public static let creatorHostOS: [UInt8] = Array("Wi2k".utf8)
}

/// A VHD synthesized on demand from any block source: dynamic (the default and the exposed
/// form) or fixed. Every byte is a pure function of (source extents, source bytes, options).
///
/// Dynamic: a block is allocated iff some part of it is `.data` in the source's extent map
/// (data is never read to decide); allocated blocks are stored in virtual order, each with an
/// all-ones sector bitmap. The skeleton (footer copy, dynamic header, pointer area, BAT) depends
/// on the virtual size and the extent map only. The trailing footer follows the payload.
///
/// Fixed: the payload starts at 0 and maps every virtual byte to the same file offset, zero
/// ranges included (a fixed disk stores all of them); the skeleton is empty and the footer is
/// the 512 bytes after the data. Such a file cannot carry a plugin pointer.
public final class VHDView: BlockSource {
    public let source: any BlockSource
    public let options: VHDSynthesisOptions
    public let layout: VHDLayout
    public let virtualSize: UInt64
    public let size: UInt64
    public let footer: VHDFooter
    public let dynamicHeader: VHDDynamicHeader?
    /// Dynamic: blocks touched by `.data` extents, one slot each (zero pad, sector bitmap, data)
    /// from `payloadStart`. Fixed: empty (the payload is the disk itself).
    public let payload: PayloadRunMap
    public var allocatedBlockCount: UInt64 { payload.allocatedCount }
    /// Offset of the trailing footer.
    public let footerOffset: UInt64

    private let footerBytes: [UInt8]
    private let headerBytes: [UInt8]
    /// The pointer as stored: frame + blob.
    private let pointerBytes: [UInt8]
    /// A fixed disk's pointer, kept beside the file (`VHDSidecarTag`); its digest is in the footer.
    public let sidecarPointer: [UInt8]?

    public var subformat: VHDSubformat { layout.subformat }
    public var blockSize: UInt32 { layout.blockSize }
    public var payloadStart: UInt64 { layout.payloadStart }
    public var pointerArea: Range<UInt64>? {
        subformat == .dynamic ? VHDLayout.pointerAreaOffset..<VHDLayout.pointerAreaOffset + UInt64(VHDLayout.pointerAreaLength) : nil
    }

    /// Builds the view. Reads the source's extent map once (dynamic only); reads no data.
    public init(source: any BlockSource, options: VHDSynthesisOptions = VHDSynthesisOptions()) throws {
        guard options.seed.count == 16 else { throw VHDSynthesisError.invalidSeed(count: options.seed.count) }
        let layout = try VHDLayout(subformat: options.subformat, virtualSize: source.size, blockSize: options.blockSize)
        guard options.subformat == .fixed || options.pointer.count <= VHDLayout.pointerAreaLength - PointerAreaFrame.headerSize else {
            throw VHDSynthesisError.pointerTooLarge(count: options.pointer.count, capacity: VHDLayout.pointerAreaLength - PointerAreaFrame.headerSize)
        }
        pointerBytes = options.subformat == .fixed ? [] : PointerAreaFrame.frame(options.pointer)
        sidecarPointer = options.subformat == .fixed && !options.pointer.isEmpty ? options.pointer : nil
        self.source = source
        self.options = options
        self.layout = layout
        let v = source.size
        virtualSize = v

        if options.subformat == .dynamic {
            payload = try PayloadRunMap(source: source, unitSize: UInt64(layout.blockSize), payloadStart: layout.payloadStart,
                                        slotPad: layout.slotPad, padStructure: layout.bitmapLength)
        } else {
            // No slots: reads, extents and spans of a fixed disk go to the source directly.
            payload = PayloadRunMap(runs: [], allocatedCount: 0, unitSize: VHD.sector, virtualSize: v, payloadStart: 0)
        }
        size = layout.fileSize(allocated: payload.allocatedCount)
        footerOffset = size - UInt64(VHD.footerSize)

        var f = VHDFooter(dataOffset: options.subformat == .dynamic ? VHDLayout.dynamicHeaderOffset : .max,
                          creatorApp: VHDIdentity.creatorApp, creatorVersion: VHDIdentity.creatorVersion,
                          creatorHostOS: VHDIdentity.creatorHostOS, size: v, geometry: VHDGeometry.forSize(v),
                          diskType: options.subformat == .dynamic ? .dynamic : .fixed,
                          uniqueID: GUID.derived(seed: options.seed, label: "vhd-unique-id").bytes)
        if let blob = sidecarPointer { f.reserved = VHDSidecarTag.tag(for: blob) }
        footerBytes = f.serialize()
        footer = try VHDFooter.parse(footerBytes, at: footerOffset)
        if options.subformat == .dynamic {
            let h = VHDDynamicHeader(tableOffset: VHDLayout.batOffset, maxTableEntries: UInt32(layout.blockCount),
                                     blockSize: layout.blockSize)
            headerBytes = h.serialize()
            dynamicHeader = try VHDDynamicHeader.parse(headerBytes, at: VHDLayout.dynamicHeaderOffset)
        } else {
            headerBytes = []
            dynamicHeader = nil
        }
        if options.subformat == .fixed { try Self.azureCheck(footer, fileSize: size) }
    }

    /// Azure's checks on an uploaded fixed VHD, applied to what we are about to write: cookie,
    /// checksum, fixed type, size a whole number of MiB, the file exactly size + 512, geometry
    /// from the spec's algorithm.
    static func azureCheck(_ f: VHDFooter, fileSize: UInt64) throws {
        if f.diskType != .fixed { throw VHDSynthesisError.fixedFooterInvalid("disk type \(f.diskTypeRaw) is not fixed (2)") }
        if !f.checksumIsValid { throw VHDSynthesisError.fixedFooterInvalid("checksum \(VHD.hex32(f.checksum)) is not \(VHD.hex32(f.computedChecksum))") }
        if f.currentSize % VHD.mib != 0 {
            throw VHDSynthesisError.fixedSizeNotMiBMultiple(size: f.currentSize, next: (f.currentSize / VHD.mib + 1) * VHD.mib)
        }
        if fileSize != f.currentSize + 512 { throw VHDSynthesisError.fixedFooterInvalid("file size \(fileSize) is not current size + 512") }
        if f.geometry != VHDGeometry.forSize(f.currentSize) {
            throw VHDSynthesisError.fixedFooterInvalid("geometry \(f.geometry) is not the spec's \(VHDGeometry.forSize(f.currentSize))")
        }
    }

    // MARK: Allocation

    /// The slot rank of virtual block `p`, or nil when it is not allocated.
    public func rank(ofBlock p: UInt64) -> UInt64? { payload.rank(ofUnit: p) }

    /// The virtual block stored in slot `k` (k < allocatedBlockCount).
    public func block(ofRank k: UInt64) -> UInt64 { payload.unit(ofRank: k) }

    /// The BAT entry of virtual block `p`.
    public func batEntry(_ p: UInt64) -> UInt32 {
        rank(ofBlock: p).map { layout.batEntry(rank: $0) } ?? VHD.unallocated
    }

    // MARK: BlockSource

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        // [offset, end) in three parts: skeleton up to a, payload up to b, footer (a fixed
        // disk's skeleton is empty and its payload the source at the same offsets).
        let end = offset + UInt64(buffer.count)
        let a = Int(min(end, max(offset, payloadStart)) - offset), b = Int(min(end, max(offset, footerOffset)) - offset)
        if a > 0 { fillSkeleton(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<a])) }
        if a < b {
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[a..<b])
            if subformat == .fixed {
                try source.read(at: offset + UInt64(a), into: part)
            } else {
                // A slot's pad: zeros, then the sector bitmap (all ones: every sector is present).
                let bitmapStart = layout.slotPad - layout.bitmapLength
                try payload.read(from: source, at: offset + UInt64(a), into: part) { inSlot, pad in
                    let zeros = Int(min(UInt64(pad.count), bitmapStart > inSlot ? bitmapStart - inSlot : 0))
                    pad.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: zeros)
                    (pad.baseAddress! + zeros).initializeMemory(as: UInt8.self, repeating: 0xFF, count: pad.count - zeros)
                }
            }
        }
        if b < buffer.count {
            let pos = offset + UInt64(b)
            footerBytes.withUnsafeBytes {
                (buffer.baseAddress! + b).copyMemory(from: $0.baseAddress! + Int(pos - footerOffset), byteCount: buffer.count - b)
            }
        }
    }

    /// Skeleton bytes [pos, pos+buf.count) ⊂ [0, payloadStart) of a dynamic disk.
    private func fillSkeleton(at pos: UInt64, into buf: UnsafeMutableRawBufferPointer) {
        let base = buf.baseAddress!
        base.initializeMemory(as: UInt8.self, repeating: 0, count: buf.count)
        let end = pos + UInt64(buf.count)
        func overlay(_ bytes: [UInt8], at start: UInt64) {
            let lo = max(pos, start), hi = min(end, start + UInt64(bytes.count))
            guard lo < hi else { return }
            bytes.withUnsafeBytes { src in
                (base + Int(lo - pos)).copyMemory(from: src.baseAddress! + Int(lo - start), byteCount: Int(hi - lo))
            }
        }
        overlay(footerBytes, at: 0)
        overlay(headerBytes, at: VHDLayout.dynamicHeaderOffset)
        overlay(pointerBytes, at: VHDLayout.pointerAreaOffset)
        let bat = VHDLayout.batOffset
        let lo = max(pos, bat), hi = min(end, bat + layout.batLength)
        guard lo < hi else { return }
        // Entries past the last block (sector padding) are 0xFFFFFFFF, as qemu-img writes them.
        let first = (lo - bat) / 4, last = (hi - bat - 1) / 4
        var bytes = [UInt8](repeating: 0, count: Int(last - first + 1) * 4)
        var p = first
        var ranks = payload.rankCursor(fromUnit: first)
        while p <= last {
            var e = VHD.unallocated
            if p < layout.blockCount, let k = ranks.rank(ofUnit: p) { e = layout.batEntry(rank: k) }
            VHD.put32(&bytes, e, Int(p - first) * 4)
            p += 1
        }
        let skip = Int(lo - bat - first * 4)
        bytes.withUnsafeBytes { (base + Int(lo - pos)).copyMemory(from: $0.baseAddress! + skip, byteCount: Int(hi - lo)) }
    }

    /// Bytes [0, payloadStart): empty for a fixed disk.
    public func skeleton() throws -> [UInt8] { try read(at: 0, count: Int(payloadStart)) }

    /// Structures and payload data are `.data`; pads, unused areas and source zero/absent ranges
    /// are `.zero` (a fixed disk's zero ranges included: they are holes in the written file).
    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out: [Extent] = []
        func add(_ lo: UInt64, _ hi: UInt64, _ kind: ExtentKind) {
            let a = max(lo, r.lowerBound), b = min(hi, r.upperBound)
            if a < b { out.append(Extent(offset: a, length: b - a, kind: kind)) }
        }
        func addSource(_ fileLo: UInt64, _ vLo: UInt64, _ vHi: UInt64) throws {
            // Source range [vLo, vHi) stored from file offset fileLo, clipped to r.
            let a = max(r.lowerBound, fileLo), b = min(r.upperBound, fileLo + (vHi - vLo))
            guard a < b else { return }
            for e in try source.extents(in: vLo + (a - fileLo)..<vLo + (b - fileLo)) {
                add(fileLo + (e.offset - vLo), fileLo + (e.end - vLo), e.kind == .data ? .data : .zero)
            }
        }
        if subformat == .fixed {
            try addSource(0, 0, virtualSize)
        } else {
            if r.lowerBound < payloadStart {
                let batUsed = VHDLayout.batOffset + layout.batLength
                add(0, UInt64(VHD.footerSize), .data)
                add(UInt64(VHD.footerSize), VHDLayout.dynamicHeaderOffset, .zero)
                add(VHDLayout.dynamicHeaderOffset, VHDLayout.dynamicHeaderOffset + UInt64(VHD.dynamicHeaderSize), .data)
                add(VHDLayout.dynamicHeaderOffset + UInt64(VHD.dynamicHeaderSize), VHDLayout.pointerAreaOffset, .zero)
                let ptrEnd = VHDLayout.pointerAreaOffset + UInt64(pointerBytes.count)
                add(VHDLayout.pointerAreaOffset, ptrEnd, .data)
                add(ptrEnd, VHDLayout.batOffset, .zero)
                add(VHDLayout.batOffset, batUsed, .data)
                add(batUsed, payloadStart, .zero)
            }
            try payload.appendExtents(of: source, in: r, to: &out)
        }
        add(footerOffset, size, .data)
        return coalesce(out)
    }
}

extension VHDView: NativeFormatView {
    public static let formatName = VHD.formatName
    public static let pointerPlacement = PluginPointerPlacement.vhdPointerArea
    /// The footer after the payload: constant for a given size and seed, so a plugin file keeps it.
    public var trailerStart: UInt64 { footerOffset }
    public func trailer() throws -> [UInt8] { footerBytes }
    /// Dynamic: allocated blocks. Fixed: 512-byte sectors the source's data extents touch.
    public func allocatedUnitCount() throws -> UInt64 {
        if subformat == .dynamic { return allocatedBlockCount }
        var count: UInt64 = 0, next: UInt64 = 0
        for e in try source.allExtents() where e.kind == .data && e.length > 0 {
            let first = max(e.offset / VHD.sector, next), end = (e.end + VHD.sector - 1) / VHD.sector
            if end > first { count += end - first }
            next = max(next, end)
        }
        return count
    }
    /// The dynamic block size; a fixed disk's unit is the sector.
    public var allocationUnit: UInt64 { subformat == .dynamic ? UInt64(blockSize) : VHD.sector }

    /// Dynamic: inside the block's slot, nil for unallocated blocks. Fixed: the identity.
    public func fileOffset(ofVirtual offset: UInt64) -> UInt64? {
        guard offset < virtualSize else { return nil }
        if subformat == .fixed { return offset }
        return payload.fileOffset(ofVirtual: offset)
    }
}

extension VHDView: FileBackedSource {
    /// A fixed disk's payload is the source's bytes at the same offsets; a dynamic disk's only
    /// within one block's data (the bitmaps between blocks are synthesized).
    public func fileSpans(in range: Range<UInt64>) -> [FileSpan]? {
        guard range.upperBound <= footerOffset, range.lowerBound >= payloadStart,
              let fb = source as? any FileBackedSource else { return nil }
        if range.isEmpty { return [] }
        if subformat == .fixed { return fb.fileSpans(in: range) }
        return payload.fileSpans(of: fb, in: range)
    }
}
