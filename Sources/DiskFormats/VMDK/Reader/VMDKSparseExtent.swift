import BlockCore

/// One hosted sparse extent (monolithicSparse, twoGbMaxExtentSparse pieces, streamOptimized) as a
/// block source of `capacity` sectors.
///
/// Open checks: the header; for stream-optimized files with the grain directory at the end, the
/// footer (footer marker, footer header, end-of-stream marker in the last three sectors); the
/// grain directory inside the file; every grain table inside the file, outside the header,
/// descriptor and directory, and not shared with or overlapping another table (a loop). Grain
/// tables are read on first use and kept; a grain outside the file is an error when read.
public final class VMDKSparseExtent: BlockSource {
    public let file: any BlockSource
    public let name: String
    /// The header in effect (the footer's for a stream-optimized file with GD at the end).
    public let header: VMDKSparseHeader
    public let descriptor: VMDKDescriptor?
    /// Where the embedded descriptor lies in the file, in bytes (empty when there is none).
    public let descriptorRange: Range<UInt64>
    public let size: UInt64
    public let grainBytes: UInt64
    /// Grain directory entries: sector of each grain table (0 = none).
    public let directory: [UInt32]
    private let tables = Locked<[Int: [UInt32]]>([:])

    func err(_ structure: String, _ at: UInt64, _ reason: String) -> FormatError {
        FormatError(VMDK.errorName, name.isEmpty ? structure : "\(name): \(structure)", at: at, reason)
    }

    /// `name` prefixes structure names in errors (the extent file of a multi-extent disk).
    public init(file: any BlockSource, name: String = "") throws {
        self.file = file
        self.name = name
        let fileSize = file.size
        func err(_ s: String, _ at: UInt64, _ r: String) -> FormatError {
            FormatError(VMDK.errorName, name.isEmpty ? s : "\(name): \(s)", at: at, r)
        }
        guard fileSize >= 512 else { throw err("sparse header", 0, "file of \(fileSize) bytes is shorter than the 512-byte header") }
        var h = try VMDKSparseHeader.parse(try file.read(at: 0, count: 512), at: 0)
        // Descriptor (optional in an extent of a multi-extent disk).
        var desc: VMDKDescriptor?
        var descRange: Range<UInt64> = 0..<0
        if h.descriptorOffset != 0 && h.descriptorSize != 0 {
            let (bytes, o) = h.descriptorSize.multipliedReportingOverflow(by: 512)
            let (dEnd, o2) = (h.descriptorOffset &* 512).addingReportingOverflow(bytes)
            guard !o, !o2, h.descriptorOffset < fileSize / 512, dEnd <= fileSize, bytes <= VMDK.maxDescriptorBytes else {
                throw err("sparse header", 28, "descriptor of \(h.descriptorSize) sectors at sector \(h.descriptorOffset) is not inside the file or larger than 1 MiB")
            }
            desc = try VMDKDescriptor.parse(try file.read(at: h.descriptorOffset * 512, count: Int(bytes)), at: h.descriptorOffset * 512)
            descRange = h.descriptorOffset * 512..<dEnd
        }
        if h.gdOffset == VMDK.gdAtEnd {
            // Stream-optimized, GD through the footer: marker, footer, end-of-stream (VMDK 1.1 §4.3).
            guard fileSize >= 2048, fileSize % 512 == 0 else {
                throw err("footer", fileSize, "a stream-optimized file with its directory at the end needs a footer; the file has \(fileSize) bytes")
            }
            let marker = try VMDKMarker.parse(try file.read(at: fileSize - 1536, count: 512), at: fileSize - 1536)
            guard marker.type == .footer else { throw err("footer marker", fileSize - 1536, "marker type \(marker.type.rawValue) is not the footer's (3)") }
            let eos = try file.read(at: fileSize - 512, count: 512)
            guard eos.allSatisfy({ $0 == 0 }) else { throw err("end-of-stream marker", fileSize - 512, "last sector is not the end-of-stream marker (all zeros)") }
            let footer = try VMDKSparseHeader.parse(try file.read(at: fileSize - 1024, count: 512), at: fileSize - 1024, name: "footer")
            guard footer.gdOffset != VMDK.gdAtEnd else { throw err("footer", fileSize - 1024 + 56, "footer's gdOffset is still 'at end'") }
            guard footer.capacity == h.capacity, footer.grainSize == h.grainSize, footer.numGTEsPerGT == h.numGTEsPerGT else {
                throw err("footer", fileSize - 1024, "footer's capacity, grain size or table size differ from the header's")
            }
            h = footer
        }
        header = h
        descriptor = desc
        descriptorRange = descRange
        size = h.capacity * 512
        grainBytes = h.grainSize * 512
        // Grain directory: inside the file, bounded.
        let entries = h.gdEntries
        guard entries <= VMDK.maxGDEntries else {
            throw err("sparse header", 12, "\(entries) grain directory entries (capacity \(h.capacity) sectors) exceed the \(VMDK.maxGDEntries) limit")
        }
        let gdBytes = entries * 4
        let (gdStart, o) = h.gdOffset.multipliedReportingOverflow(by: 512)
        guard !o, h.gdOffset >= 1, gdStart < fileSize, gdBytes <= fileSize - gdStart else {
            throw err("grain directory", 56, "grain directory of \(entries) entries at sector \(h.gdOffset) is not inside the file (\(fileSize) bytes)")
        }
        let raw = try file.read(at: gdStart, count: Int(gdBytes))
        var dir = [UInt32](repeating: 0, count: Int(entries))
        for i in 0..<Int(entries) { dir[i] = raw.le32(i * 4) }
        // Grain tables: inside the file, clear of the metadata, disjoint from each other.
        let gtBytes = UInt64(h.numGTEsPerGT) * 4
        let gdSectorsEnd = (gdStart + gdBytes + 511) / 512
        var spans: [(start: UInt64, index: Int)] = []
        for (i, s) in dir.enumerated() where s != 0 {
            let at = gdStart + UInt64(i) * 4
            let start = UInt64(s) * 512
            guard start + gtBytes <= fileSize else {
                throw err("grain directory entry \(i)", at, "grain table at sector \(s) runs past the end of the file (\(fileSize) bytes)")
            }
            let descEnd = desc == nil ? 1 : descRange.upperBound / 512
            if UInt64(s) < max(1, descEnd) || (UInt64(s) < gdSectorsEnd && (UInt64(s) * 512 + gtBytes) > gdStart) {
                throw err("grain directory entry \(i)", at, "grain table at sector \(s) overlaps the header, descriptor or grain directory")
            }
            spans.append((start, i))
        }
        spans.sort { $0.start < $1.start }
        for k in spans.indices.dropFirst() where spans[k].start < spans[k - 1].start + gtBytes {
            let same = spans[k].start == spans[k - 1].start
            throw err("grain directory entry \(spans[k].index)", gdStart + UInt64(spans[k].index) * 4,
                      same ? "grain table at sector \(spans[k].start / 512) is also the table of entry \(spans[k - 1].index) (a loop)"
                           : "grain table at sector \(spans[k].start / 512) overlaps the table of entry \(spans[k - 1].index)")
        }
        directory = dir
    }

    /// Grain table `i` (empty when the directory has none), read once.
    public func table(_ i: Int) throws -> [UInt32]? {
        if let t = tables.withLock({ $0[i] }) { return t }
        let s = directory[i]
        guard s != 0 else { return nil }
        let n = Int(header.numGTEsPerGT)
        let raw = try file.read(at: UInt64(s) * 512, count: n * 4)
        var t = [UInt32](repeating: 0, count: n)
        for k in 0..<n { t[k] = raw.le32(k * 4) }
        tables.withLock { $0[i] = t }
        return t
    }

    /// The grain table entry of grain `g` (0 when unallocated).
    public func entry(ofGrain g: UInt64) throws -> UInt32 {
        let per = UInt64(header.numGTEsPerGT)
        guard let t = try table(Int(g / per)) else { return 0 }
        return t[Int(g % per)]
    }

    /// Reads grain `g`'s bytes `[from, from+buf.count)`.
    private func readGrain(_ g: UInt64, from: UInt64, into buf: UnsafeMutableRawBufferPointer) throws {
        let e = try entry(ofGrain: g)
        if e == 0 || (e == 1 && header.zeroedGrainGTE) {
            buf.initializeMemory(as: UInt8.self, repeating: 0)
            return
        }
        let per = UInt64(header.numGTEsPerGT)
        let gteAt = UInt64(directory[Int(g / per)]) * 512 + (g % per) * 4
        let start = UInt64(e) * 512
        guard start < file.size else {
            throw err("grain table entry \(g)", gteAt, "grain \(g) at sector \(e) is past the end of the file (\(file.size) bytes)")
        }
        if !header.isCompressed {
            let avail = file.size - start
            guard from < avail else {
                throw err("grain table entry \(g)", gteAt, "grain \(g) at sector \(e) is cut off by the end of the file")
            }
            let n = Int(min(UInt64(buf.count), avail - from))
            try file.read(at: start + from, into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<n]))
            if n < buf.count { UnsafeMutableRawBufferPointer(rebasing: buf[n...]).initializeMemory(as: UInt8.self, repeating: 0) }
            return
        }
        let data = try inflateGrain(g, at: start, gteAt: gteAt)
        let lo = Int(from)
        data.withUnsafeBytes { src in
            buf.baseAddress!.copyMemory(from: src.baseAddress! + lo, byteCount: buf.count)
        }
    }

    /// A compressed grain, inflated to a whole grain (a shorter stream is padded with zeros): with
    /// markers, `lba` (u64) and `size` (u32) then the zlib stream; without, the zlib stream alone
    /// (at most a grain and a sector of the file).
    func inflateGrain(_ g: UInt64, at start: UInt64, gteAt: UInt64) throws -> [UInt8] {
        let avail = file.size - start
        var dataAt = start, length: UInt64
        if header.hasMarkers {
            guard avail >= 12 else { throw err("grain marker", start, "grain \(g)'s marker is cut off by the end of the file") }
            let m = try file.read(at: start, count: 12)
            let lba = m.le64(0), sz = UInt64(m.le32(8))
            guard lba == g * header.grainSize else {
                throw err("grain marker", start, "grain marker says sector \(lba), its grain table entry is for grain \(g) (sector \(g * header.grainSize))")
            }
            guard sz > 0, sz <= avail - 12, sz <= 2 * grainBytes + 4096 else {
                throw err("grain marker", start + 8, "compressed size \(sz) is zero, too large or past the end of the file")
            }
            dataAt = start + 12
            length = sz
        } else {
            length = min(avail, grainBytes + 4096)
        }
        let bytes = try file.read(at: dataAt, count: Int(length))
        var out = [UInt8](repeating: 0, count: Int(grainBytes))
        let structure = name.isEmpty ? "compressed grain \(g)" : "\(name): compressed grain \(g)"
        try bytes.withUnsafeBytes { src in
            try out.withUnsafeMutableBytes { dst in
                _ = try Deflate.decompress(src, into: dst, framing: .zlib, format: VMDK.errorName, structure: structure, at: dataAt, allowShort: true)
            }
        }
        return out
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        var done = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let g = pos / grainBytes, within = pos % grainBytes
            let n = Int(min(UInt64(buffer.count - done), grainBytes - within))
            try readGrain(g, from: within, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + n]))
            done += n
        }
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out: [Extent] = []
        let per = UInt64(header.numGTEsPerGT)
        var pos = r.lowerBound
        while pos < r.upperBound {
            let g = pos / grainBytes
            let ti = Int(g / per)
            if directory[ti] == 0 {
                // A whole table's worth of grains without a table: absent.
                let end = min(r.upperBound, (UInt64(ti) + 1) * per * grainBytes)
                out.append(Extent(offset: pos, length: end - pos, kind: .absent))
                pos = end
                continue
            }
            let e = try entry(ofGrain: g)
            let kind: ExtentKind = e == 0 ? .absent : (e == 1 && header.zeroedGrainGTE ? .zero : .data)
            let end = min(r.upperBound, (g + 1) * grainBytes)
            out.append(Extent(offset: pos, length: end - pos, kind: kind))
            pos = end
        }
        return coalesce(out)
    }

    /// Allocated grains (entries other than 0 and the zero-grain 1), reading every table.
    public func allocatedGrainCount() throws -> UInt64 {
        var n: UInt64 = 0
        for i in directory.indices {
            guard let t = try table(i) else { continue }
            n += UInt64(t.filter { $0 > 1 || ($0 == 1 && !header.zeroedGrainGTE) }.count)
        }
        return n
    }
}
