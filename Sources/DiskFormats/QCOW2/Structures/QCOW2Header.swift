import BlockCore

/// One header extension: type, data (unpadded), and where its data starts in the file.
public struct QCOW2HeaderExtension: Sendable, Equatable {
    public var type: UInt32
    public var data: [UInt8]
    public var offset: UInt64

    public init(type: UInt32, data: [UInt8], offset: UInt64 = 0) {
        self.type = type
        self.data = data
        self.offset = offset
    }
}

/// The qcow2 header (qcow2.txt "Header"), versions 2 and 3, plus its extensions and the backing
/// file name. `serialize` writes version 3 with `headerLength` 112 (or 104).
public struct QCOW2Header: Sendable, Equatable {
    public var version: UInt32 = 3
    public var backingFileOffset: UInt64 = 0
    public var backingFileSize: UInt32 = 0
    public var clusterBits: UInt32 = QCOW2.defaultClusterBits
    public var size: UInt64 = 0
    public var cryptMethod: UInt32 = 0
    public var l1Size: UInt32 = 0
    public var l1TableOffset: UInt64 = 0
    public var refcountTableOffset: UInt64 = 0
    public var refcountTableClusters: UInt32 = 0
    public var nbSnapshots: UInt32 = 0
    public var snapshotsOffset: UInt64 = 0
    // Version 3 (v2 reads them as: no features, refcount_order 4, length 72).
    public var incompatibleFeatures: UInt64 = 0
    public var compatibleFeatures: UInt64 = 0
    public var autoclearFeatures: UInt64 = 0
    public var refcountOrder: UInt32 = QCOW2.refcountOrder
    public var headerLength: UInt32 = UInt32(QCOW2.v3HeaderLength)
    public var compressionType: UInt8 = 0
    /// Extensions in file order, without the end marker.
    public var extensions: [QCOW2HeaderExtension] = []
    /// The backing file name (backing_file_offset/size), when there is one.
    public var backingFile: String?

    public init() {}

    public var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
    public var refcountBits: UInt64 { 1 << UInt64(refcountOrder) }
    public var l2Entries: UInt64 { clusterSize / 8 }

    public func extensionData(_ type: UInt32) -> [UInt8]? { extensions.first { $0.type == type }?.data }
    public var backingFormat: String? {
        extensionData(QCOW2.extBackingFormat).map { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// The fixed header fields as written: `headerLength` bytes (v3) or 72 (v2).
    public func serializeFields() -> [UInt8] {
        let n = version >= 3 ? Int(headerLength) : QCOW2.v2HeaderLength
        var b = [UInt8](repeating: 0, count: n)
        QCOW2BE.put32(&b, QCOW2.magicValue, at: 0)
        QCOW2BE.put32(&b, version, at: 4)
        QCOW2BE.put64(&b, backingFileOffset, at: 8)
        QCOW2BE.put32(&b, backingFileSize, at: 16)
        QCOW2BE.put32(&b, clusterBits, at: 20)
        QCOW2BE.put64(&b, size, at: 24)
        QCOW2BE.put32(&b, cryptMethod, at: 32)
        QCOW2BE.put32(&b, l1Size, at: 36)
        QCOW2BE.put64(&b, l1TableOffset, at: 40)
        QCOW2BE.put64(&b, refcountTableOffset, at: 48)
        QCOW2BE.put32(&b, refcountTableClusters, at: 56)
        QCOW2BE.put32(&b, nbSnapshots, at: 60)
        QCOW2BE.put64(&b, snapshotsOffset, at: 64)
        if version >= 3 {
            QCOW2BE.put64(&b, incompatibleFeatures, at: 72)
            QCOW2BE.put64(&b, compatibleFeatures, at: 80)
            QCOW2BE.put64(&b, autoclearFeatures, at: 88)
            QCOW2BE.put32(&b, refcountOrder, at: 96)
            QCOW2BE.put32(&b, headerLength, at: 100)
            if n > 104 { b[104] = compressionType }
        }
        return b
    }

    /// Fields, then each extension (type, length, data padded to 8), then the end marker.
    public func serialize() -> [UInt8] {
        var b = serializeFields()
        for e in extensions {
            var h = [UInt8](repeating: 0, count: 8)
            QCOW2BE.put32(&h, e.type, at: 0)
            QCOW2BE.put32(&h, UInt32(e.data.count), at: 4)
            b += h + e.data
            b += [UInt8](repeating: 0, count: Int(QCOW2.roundUp(UInt64(e.data.count), to: 8)) - e.data.count)
        }
        b += [UInt8](repeating: 0, count: 8)
        return b
    }

    /// Parses the header at the start of `head` (the file's first cluster, or fewer bytes for a
    /// short file). Checks only what is needed to parse safely; `problems(fileSize:)` judges
    /// the values.
    public static func parse(_ head: [UInt8]) throws -> QCOW2Header {
        func err(_ at: Int, _ why: String) -> FormatError { FormatError(QCOW2.formatName, "header", at: UInt64(at), why) }
        guard head.count >= QCOW2.v2HeaderLength else { throw err(0, "truncated: \(head.count) bytes, a header needs 72") }
        guard QCOW2BE.u32(head, 0) == QCOW2.magicValue else { throw err(0, "no QFI\\xfb magic") }
        var h = QCOW2Header()
        h.version = QCOW2BE.u32(head, 4)
        guard h.version == 2 || h.version == 3 else { throw err(4, "version \(h.version) is not 2 or 3") }
        h.backingFileOffset = QCOW2BE.u64(head, 8)
        h.backingFileSize = QCOW2BE.u32(head, 16)
        h.clusterBits = QCOW2BE.u32(head, 20)
        guard (QCOW2.minClusterBits...QCOW2.maxClusterBits).contains(h.clusterBits) else {
            throw err(20, "cluster_bits \(h.clusterBits) outside \(QCOW2.minClusterBits)–\(QCOW2.maxClusterBits)")
        }
        h.size = QCOW2BE.u64(head, 24)
        h.cryptMethod = QCOW2BE.u32(head, 32)
        h.l1Size = QCOW2BE.u32(head, 36)
        h.l1TableOffset = QCOW2BE.u64(head, 40)
        h.refcountTableOffset = QCOW2BE.u64(head, 48)
        h.refcountTableClusters = QCOW2BE.u32(head, 56)
        h.nbSnapshots = QCOW2BE.u32(head, 60)
        h.snapshotsOffset = QCOW2BE.u64(head, 64)
        var extStart = QCOW2.v2HeaderLength
        if h.version == 2 {
            h.headerLength = UInt32(QCOW2.v2HeaderLength)
        } else {
            guard head.count >= 104 else { throw err(72, "truncated: a version 3 header needs 104 bytes") }
            h.incompatibleFeatures = QCOW2BE.u64(head, 72)
            h.compatibleFeatures = QCOW2BE.u64(head, 80)
            h.autoclearFeatures = QCOW2BE.u64(head, 88)
            h.refcountOrder = QCOW2BE.u32(head, 96)
            guard h.refcountOrder <= 6 else { throw err(96, "refcount_order \(h.refcountOrder) above 6") }
            h.headerLength = QCOW2BE.u32(head, 100)
            guard h.headerLength >= 104, h.headerLength % 8 == 0 else {
                throw err(100, "header_length \(h.headerLength) is below 104 or not a multiple of 8")
            }
            guard UInt64(h.headerLength) <= h.clusterSize, Int(h.headerLength) <= head.count else {
                throw err(100, "header_length \(h.headerLength) does not fit in the first cluster")
            }
            if h.headerLength > 104 { h.compressionType = head[104] }
            extStart = Int(h.headerLength)
        }
        let clusterEnd = Int(min(UInt64(head.count), h.clusterSize))
        if h.backingFileOffset != 0 {
            guard h.backingFileSize > 0, h.backingFileSize <= QCOW2.maxBackingFileNameLength else {
                throw err(16, "backing_file_size \(h.backingFileSize) is 0 or above \(QCOW2.maxBackingFileNameLength)")
            }
            let (e, o) = h.backingFileOffset.addingReportingOverflow(UInt64(h.backingFileSize))
            guard !o, e <= UInt64(clusterEnd), h.backingFileOffset >= UInt64(extStart) else {
                throw err(8, "backing file name at \(QCOW2.hex(h.backingFileOffset)) lies outside the first cluster's free area")
            }
            h.backingFile = String(decoding: head[Int(h.backingFileOffset)..<Int(e)], as: UTF8.self)
        }
        // Extensions: from the end of the fields to the backing file name or the end of the
        // first cluster (as QEMU reads them); the end marker may be missing when they fill it.
        let end = h.backingFileOffset != 0 ? Int(h.backingFileOffset) : clusterEnd
        var at = extStart
        while at < end {
            guard at + 8 <= end else { throw err(at, "header extension header runs past \(QCOW2.hex(UInt64(end)))") }
            let type = QCOW2BE.u32(head, at), len = Int(QCOW2BE.u32(head, at + 4))
            if type == QCOW2.extEnd { break }
            guard len <= end - at - 8 else { throw err(at + 4, "header extension 0x\(String(type, radix: 16)) length \(len) runs past \(QCOW2.hex(UInt64(end)))") }
            h.extensions.append(QCOW2HeaderExtension(type: type, data: Array(head[at + 8..<at + 8 + len]), offset: UInt64(at + 8)))
            at += 8 + Int(QCOW2.roundUp(UInt64(len), to: 8))
        }
        return h
    }

    /// Judges the fields against the file size: (field offset, reason) for the first problem.
    public func problems(fileSize: UInt64) -> [(Int, String)] {
        var out: [(Int, String)] = []
        let c = clusterSize
        if size > QCOW2.maxVirtualSize { out.append((24, "virtual size \(size) above 2^61")) }
        let needL1 = QCOW2.divRoundUp(size, c * l2Entries)
        if UInt64(l1Size) < needL1 { out.append((36, "l1_size \(l1Size) below the \(needL1) entries the virtual size needs")) }
        if UInt64(l1Size) * 8 > QCOW2.maxL1Bytes { out.append((36, "l1_size \(l1Size) above the 32 MiB limit")) }
        if l1Size > 0 {
            if l1TableOffset % c != 0 { out.append((40, "L1 table offset \(QCOW2.hex(l1TableOffset)) is not cluster-aligned")) }
            let (e, o) = l1TableOffset.addingReportingOverflow(UInt64(l1Size) * 8)
            if o || e > fileSize { out.append((40, "L1 table at \(QCOW2.hex(l1TableOffset)) (\(l1Size) entries) runs past the end of the file (\(QCOW2.hex(fileSize)))")) }
        }
        if refcountTableOffset % c != 0 || refcountTableOffset == 0 {
            out.append((48, "refcount table offset \(QCOW2.hex(refcountTableOffset)) is 0 or not cluster-aligned"))
        }
        let rtBytes = UInt64(refcountTableClusters) * c
        if rtBytes > QCOW2.maxRefcountTableBytes { out.append((56, "refcount_table_clusters \(refcountTableClusters) above the 8 MiB limit")) }
        let (re, ro) = refcountTableOffset.addingReportingOverflow(rtBytes)
        if ro || re > fileSize { out.append((48, "refcount table at \(QCOW2.hex(refcountTableOffset)) runs past the end of the file")) }
        if version >= 3 {
            if refcountOrder > 6 { out.append((96, "refcount_order \(refcountOrder) above 6")) }
        }
        if nbSnapshots > 0, snapshotsOffset % c != 0 { out.append((64, "snapshot table offset \(QCOW2.hex(snapshotsOffset)) is not cluster-aligned")) }
        return out
    }
}
