import BlockCore
#if canImport(Glibc)
import Glibc
#endif

/// Opens the backing file a qcow2 image names: (resolved path, backing format or nil) → source.
public typealias QCOW2BackingOpener = (String, String?) throws -> any BlockSource

/// A qcow2 file (version 2 or 3) as a read-only block source: L1/L2 mapping, the v3 zero flag,
/// deflate-compressed clusters, and backing files (qcow2 or raw, or any format the registry
/// opens), resolved relative to the image's directory, loops and depth checked. Compressed
/// clusters inflate through the product's one zlib binding (`Deflate`).
///
/// Refused with `QCOW2OpenError`: external data files, encryption, extended L2 entries, zstd
/// compression, unknown incompatible features. Every structural problem is a `FormatError`
/// naming the structure and its file offset; no allocation is sized by an unchecked field.
public final class QCOW2File: BlockSource, @unchecked Sendable {
    // @unchecked: immutable after init; the underlying sources are thread-safe.
    public let path: String?
    public let header: QCOW2Header
    public let fileSize: UInt64
    /// The L1 table as read (validated: every non-zero entry names an aligned L2 table inside the file).
    public let l1: [UInt64]
    public let backing: (any BlockSource)?
    /// The backing file as resolved on this system, when there is one.
    public let backingPath: String?
    let file: any BlockSource
    /// The last few inflated clusters, by host offset (small reads of a compressed cluster,
    /// as FUSE makes them, inflate it once).
    private let inflated = Locked<[(UInt64, [UInt8])]>([])
    static let inflatedCacheSize = 4

    public var size: UInt64 { header.size }
    public var clusterSize: UInt64 { header.clusterSize }
    public var l2Entries: UInt64 { header.l2Entries }
    public var clusterCount: UInt64 { QCOW2.divRoundUp(header.size, clusterSize) }

    // MARK: Opening

    /// Opens the image at `path`; its backing chain is opened too (relative names against the
    /// image's directory), at most `QCOW2.maxBackingDepth` deep, loops refused.
    public static func open(path: String) throws -> QCOW2File { try open(path: path, chain: []) }

    static func open(path: String, chain: [String]) throws -> QCOW2File {
        let real = Self.realPath(path) ?? path
        if chain.contains(real) { throw QCOW2OpenError.backingLoop(chain: chain + [real]) }
        if chain.count > QCOW2.maxBackingDepth { throw QCOW2OpenError.backingTooDeep(chain: chain + [real]) }
        let raw = try RawFile(path: path)
        return try QCOW2File(source: raw, name: path) { name, format in
            let resolved = Self.resolve(backing: name, childPath: path)
            guard access(resolved, F_OK) == 0 else { throw QCOW2OpenError.backingMissing(child: path, backing: resolved) }
            let backReal = Self.realPath(resolved) ?? resolved
            if backReal == real || chain.contains(backReal) { throw QCOW2OpenError.backingLoop(chain: chain + [real, backReal]) }
            let fmt = try format ?? Self.detectFormat(resolved)
            switch fmt {
            case QCOW2.formatName: return try QCOW2File.open(path: resolved, chain: chain + [real])
            case "raw", "file": return try RawFile(path: resolved)
            default:
                guard let d = DiskFormatRegistry.driver(named: fmt) else { throw QCOW2OpenError.backingFormat(child: path, format: fmt) }
                return try d.open(path: resolved)
            }
        }
    }

    /// A backing name as a path: absolute names as they are, relative ones against the
    /// directory of the image (as QEMU resolves them).
    public static func resolve(backing name: String, childPath: String) -> String {
        if name.hasPrefix("/") { return name }
        guard let i = childPath.lastIndex(of: "/") else { return name }
        return String(childPath[...i]) + name
    }

    static func realPath(_ path: String) -> String? {
        guard let r = realpath(path, nil) else { return nil }
        defer { free(r) }
        return String(cString: r)
    }

    /// qcow2 by magic, else the driver whose signature it carries, else raw.
    static func detectFormat(_ path: String) throws -> String {
        try DiskFormatRegistry.detect(path: path)?.name ?? "raw"
    }

    /// Parses a qcow2 image held by any block source. `backingOpener` opens a named backing
    /// file; without one, an image with a backing file is refused (`noBackingResolver`).
    public init(source: any BlockSource, name: String = "<source>", backingOpener: QCOW2BackingOpener? = nil) throws {
        file = source
        path = name
        fileSize = source.size
        // The header and its extensions live in the first cluster: read 4 KiB for cluster_bits,
        // then the whole cluster when it is larger.
        var head = try source.read(at: 0, count: Int(min(fileSize, 4096)))
        if head.count >= 24 {
            let bits = QCOW2BE.u32(head, 20)
            if (QCOW2.minClusterBits...QCOW2.maxClusterBits).contains(bits), (1 << UInt64(bits)) > 4096, fileSize > 4096 {
                head = try source.read(at: 0, count: Int(min(fileSize, 1 << UInt64(bits))))
            }
        }
        let h = try QCOW2Header.parse(head)
        header = h
        func err(_ s: String, _ at: UInt64, _ why: String) -> FormatError { FormatError(QCOW2.formatName, s, at: at, why) }

        // Refusals first: what this reader will not read at all.
        if h.cryptMethod != 0 { throw QCOW2OpenError.encrypted(path: name, method: h.cryptMethod) }
        if h.incompatibleFeatures & QCOW2.incompatExternalData != 0 || h.extensionData(QCOW2.extExternalDataFile) != nil {
            throw QCOW2OpenError.externalDataFile(path: name)
        }
        if h.incompatibleFeatures & QCOW2.incompatExtendedL2 != 0 {
            throw QCOW2OpenError.unsupportedFeature(path: name, feature: "extended L2 entries (subclusters)")
        }
        if h.incompatibleFeatures & QCOW2.incompatCompressionType != 0 || h.compressionType != 0 {
            guard h.compressionType == 0 else {
                throw QCOW2OpenError.unsupportedFeature(path: name, feature: "compression type \(h.compressionType) (zstd)")
            }
        }
        let unknown = h.incompatibleFeatures & ~QCOW2.knownIncompatible
        if unknown != 0 { throw QCOW2OpenError.unsupportedFeature(path: name, feature: "incompatible feature bits 0x\(String(unknown, radix: 16))") }
        if h.refcountOrder > 6 { throw err("header", 96, "refcount_order \(h.refcountOrder) above 6") }
        if let (at, why) = h.problems(fileSize: fileSize).first { throw err("header", UInt64(at), why) }

        // L1: bounded by 32 MiB and by the file (checked by `problems`).
        let c = h.clusterSize
        let l1Count = Int(h.l1Size)
        let l1Bytes = try source.read(at: h.l1TableOffset, count: l1Count * 8)
        var l1 = QCOW2BE.u64s(l1Bytes, count: l1Count)
        let needed = Int(QCOW2.divRoundUp(h.size, c * h.l2Entries))
        for i in 0..<l1Count {
            let e = l1[i]
            let off = e & QCOW2.offsetMask
            let at = h.l1TableOffset + UInt64(i) * 8
            if off == 0 { continue }
            if i >= needed { l1[i] = 0; continue }  // past the virtual size: never used
            guard off % c == 0 else { throw err("L1 entry \(i)", at, "L2 table offset \(QCOW2.hex(off)) is not cluster-aligned") }
            guard off <= fileSize, c <= fileSize - off else {
                throw err("L1 entry \(i)", at, "L2 table at \(QCOW2.hex(off)) lies past the end of the file (\(QCOW2.hex(fileSize)))")
            }
        }
        self.l1 = l1

        // Backing file.
        if let b = h.backingFile {
            guard let opener = backingOpener else { throw QCOW2OpenError.noBackingResolver(backing: b) }
            if b.hasPrefix("json:") { throw QCOW2OpenError.unsupportedFeature(path: name, feature: "a json: backing file name") }
            backing = try opener(b, h.backingFormat)
            backingPath = path.map { Self.resolve(backing: b, childPath: $0) }
        } else {
            backing = nil
            backingPath = nil
        }
    }

    // MARK: Mapping

    /// Where a virtual cluster's bytes come from.
    public enum Mapping: Equatable, Sendable {
        /// No entry: the backing file's bytes, or zeros.
        case unallocated
        /// v3 zero flag: zeros, whatever the backing file holds.
        case zero
        /// A standard cluster at this host offset.
        case data(UInt64)
        /// A deflate stream of at most `length` bytes at `offset` (QEMU's sector count).
        case compressed(offset: UInt64, length: UInt64)
    }

    /// The mapping of one L2 entry (entry index `index` of the table at `tableOffset`).
    public func mapping(ofL2Entry e: UInt64, at entryOffset: UInt64) throws -> Mapping {
        func err(_ why: String) -> FormatError { FormatError(QCOW2.formatName, "L2 entry", at: entryOffset, why) }
        let cb = UInt64(header.clusterBits)
        if e & QCOW2.compressedFlag != 0 {
            // Bits 0…x-1 host offset, x…61 additional 512-byte sectors, x = 62 - (cluster_bits - 8).
            let x = 62 - (cb - 8)
            let off = e & ((1 << x) - 1)
            let sectors = ((e >> x) & ((1 << (cb - 8)) - 1)) + 1
            let length = sectors * 512 - (off & 511)
            guard off >= 512, off < fileSize else { throw err("compressed cluster at \(QCOW2.hex(off)) lies outside the file (\(QCOW2.hex(fileSize)))") }
            return .compressed(offset: off, length: min(length, fileSize - off))
        }
        let off = e & QCOW2.offsetMask
        if e & QCOW2.zeroFlag != 0 {
            guard header.version >= 3 else { throw err("zero flag set in a version 2 image") }
            return .zero
        }
        if off == 0 { return .unallocated }
        guard off % clusterSize == 0 else { throw err("data cluster offset \(QCOW2.hex(off)) is not cluster-aligned") }
        guard off < fileSize else { throw err("data cluster at \(QCOW2.hex(off)) lies past the end of the file (\(QCOW2.hex(fileSize)))") }
        return .data(off)
    }

    /// Mappings of virtual clusters `first ..< first+count` (all in one L2 table), read with one pread.
    func mappings(first: UInt64, count: Int) throws -> [Mapping] {
        let k = Int(first / l2Entries)
        let l2 = l1[k] & QCOW2.offsetMask
        guard l2 != 0 else { return [Mapping](repeating: .unallocated, count: count) }
        let j = first % l2Entries
        let bytes = try file.read(at: l2 + j * 8, count: count * 8)
        var out: [Mapping] = []
        out.reserveCapacity(count)
        for i in 0..<count {
            out.append(try mapping(ofL2Entry: QCOW2BE.u64(bytes, 8 * i), at: l2 + (j + UInt64(i)) * 8))
        }
        return out
    }

    /// The mapping of virtual cluster `v`.
    public func mapping(ofCluster v: UInt64) throws -> Mapping { try mappings(first: v, count: 1)[0] }

    /// Calls `body(firstCluster, count, mapping)` for runs of clusters covering `range`: one call
    /// per cluster of an L2 table (one L2 read per table), one call for all the clusters of an
    /// L1 entry without a table — so a huge sparse image costs its L1 size, not its cluster count.
    func forEachRun(in range: Range<UInt64>, _ body: (UInt64, UInt64, Mapping) throws -> Void) throws {
        guard !range.isEmpty else { return }
        let c = clusterSize
        var v = range.lowerBound / c
        let last = (range.upperBound - 1) / c
        while v <= last {
            let tableEnd = (v / l2Entries + 1) * l2Entries
            let n = min(last + 1, tableEnd) - v
            if l1[Int(v / l2Entries)] & QCOW2.offsetMask == 0 {
                try body(v, n, .unallocated)
            } else {
                let ms = try mappings(first: v, count: Int(n))
                for (i, m) in ms.enumerated() { try body(v + UInt64(i), 1, m) }
            }
            v += n
        }
    }

    // MARK: Reading

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        let c = clusterSize
        let end = offset + UInt64(buffer.count)
        try forEachRun(in: offset..<end) { v, n, m in
            let lo = max(offset, v * c), hi = min(end, (v + n) * c)
            let out = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(lo - offset)..<Int(hi - offset)])
            let inCluster = lo - v * c
            switch m {
            case .zero: out.initializeMemory(as: UInt8.self, repeating: 0)
            case .unallocated: try readBacking(at: lo, into: out)
            case let .data(host): try readFile(at: host + inCluster, into: out)
            case let .compressed(host, length):
                let plain = try decompress(offset: host, length: length)
                plain.withUnsafeBytes { out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(inCluster)..<Int(inCluster) + out.count])) }
            }
        }
    }

    /// File bytes; past the end of the file they read as zeros (a last cluster written short).
    private func readFile(at pos: UInt64, into out: UnsafeMutableRawBufferPointer) throws {
        let avail = pos < fileSize ? Int(min(UInt64(out.count), fileSize - pos)) : 0
        if avail > 0 { try file.read(at: pos, into: UnsafeMutableRawBufferPointer(rebasing: out[0..<avail])) }
        if avail < out.count { UnsafeMutableRawBufferPointer(rebasing: out[avail...]).initializeMemory(as: UInt8.self, repeating: 0) }
    }

    private func readBacking(at pos: UInt64, into out: UnsafeMutableRawBufferPointer) throws {
        guard let b = backing else { out.initializeMemory(as: UInt8.self, repeating: 0); return }
        let end = pos + UInt64(out.count)
        let bEnd = min(end, b.size)
        if pos < bEnd { try b.read(at: pos, into: UnsafeMutableRawBufferPointer(rebasing: out[0..<Int(bEnd - pos)])) }
        if max(bEnd, pos) < end {
            UnsafeMutableRawBufferPointer(rebasing: out[Int(max(bEnd, pos) - pos)...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    /// One compressed cluster, inflated; it must fill the whole cluster (as QEMU requires).
    public func decompress(offset: UInt64, length: UInt64) throws -> [UInt8] {
        if let hit = inflated.withLock({ c in c.first { $0.0 == offset }?.1 }) { return hit }
        let n = Int(min(length, clusterSize * 2 + 1024))
        let input = try file.read(at: offset, count: n)
        // Raw deflate (zlib, window bits -15 accept QEMU's -12 streams) that must fill exactly
        // one cluster, as QEMU requires; padding after the stream's end is ignored.
        var out = [UInt8](repeating: 0, count: Int(clusterSize))
        try input.withUnsafeBytes { i in
            try out.withUnsafeMutableBytes { o in
                _ = try Deflate.decompress(i, into: o, framing: .raw, format: QCOW2.formatName, structure: "compressed cluster", at: offset)
            }
        }
        inflated.withLock { c in
            c.insert((offset, out), at: 0)
            if c.count > Self.inflatedCacheSize { c.removeLast() }
        }
        return out
    }

    /// data for allocated and compressed clusters, zero for zero-flag clusters; unallocated ones
    /// report the backing file's extents (absent past it, or without one).
    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        let c = clusterSize
        var out: [Extent] = []
        var pendingBacking: Range<UInt64>?
        func flushBacking() throws {
            guard let p = pendingBacking else { return }
            pendingBacking = nil
            if let b = backing {
                let bEnd = min(p.upperBound, b.size)
                if p.lowerBound < bEnd { out += try b.extents(in: p.lowerBound..<bEnd) }
                if max(bEnd, p.lowerBound) < p.upperBound {
                    out.append(Extent(offset: max(bEnd, p.lowerBound), length: p.upperBound - max(bEnd, p.lowerBound), kind: .absent))
                }
            } else {
                out.append(Extent(offset: p.lowerBound, length: UInt64(p.count), kind: .absent))
            }
        }
        try forEachRun(in: r) { v, n, m in
            let lo = max(r.lowerBound, v * c), hi = min(r.upperBound, (v + n) * c)
            if case .unallocated = m {
                if let p = pendingBacking, p.upperBound == lo { pendingBacking = p.lowerBound..<hi } else { try flushBacking(); pendingBacking = lo..<hi }
                return
            }
            try flushBacking()
            out.append(Extent(offset: lo, length: hi - lo, kind: m == .zero ? .zero : .data))
        }
        try flushBacking()
        return coalesce(out)
    }

    // MARK: Facts

    /// Clusters this file maps itself (standard and compressed), not its backing files'. Each
    /// distinct L2 table is read once, however many L1 entries name it.
    public func allocatedClusterCount() throws -> UInt64 {
        var n: UInt64 = 0
        var seen: [UInt64: UInt64] = [:]
        let total = clusterCount
        for (k, e) in l1.enumerated() {
            let l2 = e & QCOW2.offsetMask
            guard l2 != 0 else { continue }
            let first = UInt64(k) * l2Entries
            guard first < total else { break }
            let limit = min(l2Entries, total - first)
            if limit == l2Entries, let known = seen[l2] { n += known; continue }
            let t = try file.read(at: l2, count: Int(limit) * 8)
            var here: UInt64 = 0
            for j in 0..<Int(limit) {
                let m = QCOW2BE.u64(t, 8 * j)
                if case .data = try mapping(ofL2Entry: m, at: l2 + UInt64(j) * 8) { here += 1 } else if m & QCOW2.compressedFlag != 0 { here += 1 }
            }
            if limit == l2Entries { seen[l2] = here }
            n += here
        }
        return n
    }

    /// The backing chain below this file (paths as resolved).
    public var backingChain: [String] {
        var out: [String] = []
        var cur: QCOW2File? = self
        while let f = cur, let b = f.backingPath, out.count <= QCOW2.maxBackingDepth + 1 {
            out.append(b)
            cur = f.backing as? QCOW2File
        }
        return out
    }
}
