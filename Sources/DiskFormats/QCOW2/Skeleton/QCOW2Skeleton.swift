import BlockCore

/// Why a qcow2 file cannot be synthesized with the given disk and options.
public enum QCOW2ViewError: Error, CustomStringConvertible, Equatable, Sendable {
    case invalidClusterSize(UInt64)
    case virtualSizeNotSectorMultiple(UInt64)
    case virtualSizeTooLarge(UInt64)
    /// The plugin pointer blob does not fit the fixed reserved area.
    case pluginPointerTooLarge(count: Int, capacity: Int)

    public var description: String {
        switch self {
        case let .invalidClusterSize(c): return "qcow2: cluster size \(c) must be a power of two from 512 B to 2 MiB"
        case let .virtualSizeNotSectorMultiple(v): return "qcow2: virtual size \(v) is not a multiple of 512 (QEMU would drop the tail); pad the input first"
        case let .virtualSizeTooLarge(v): return "qcow2: virtual size \(v) needs an L1 table above QEMU's 32 MiB limit"
        case let .pluginPointerTooLarge(n, cap): return "qcow2: plugin pointer of \(n) bytes exceeds the \(cap)-byte reserved area"
        }
    }
}

/// The plugin pointer: BootLab's header extension (type `QCOW2.extPluginPointer`, "BLPT", 16
/// bytes: u64 BE offset and u64 BE length of the pointer area) names a fixed-size area of whole
/// clusters right after the header cluster. The area holds u32 BE N, the N blob bytes, zeros; it
/// is `PluginPointerPlacement.maxBlobLength` + 4 bytes rounded up to clusters, whatever the blob,
/// so the layout never depends on the pointer. Its clusters have refcount 0 and nothing
/// references them: for QEMU they are free clusters inside the file (`qemu-img check` is clean).
public enum QCOW2PluginPointerArea {
    /// The largest blob the area holds.
    public static let capacity = PluginPointerPlacement.maxBlobLength
    public static let extensionLength = 16

    /// Clusters of the area for a cluster size.
    public static func clusters(clusterSize c: UInt64) -> UInt64 { QCOW2.divRoundUp(UInt64(capacity) + 4, c) }

    /// The area's leading bytes (length + blob; the rest of the area is zeros).
    public static func encode(_ blob: [UInt8]) throws -> [UInt8] {
        guard blob.count <= capacity else { throw QCOW2ViewError.pluginPointerTooLarge(count: blob.count, capacity: capacity) }
        var d = [UInt8](repeating: 0, count: 4)
        QCOW2BE.put32(&d, UInt32(blob.count), at: 0)
        return d + blob
    }

    public static func extensionData(areaOffset: UInt64, areaLength: UInt64) -> [UInt8] {
        var d = [UInt8](repeating: 0, count: extensionLength)
        QCOW2BE.put64(&d, areaOffset, at: 0)
        QCOW2BE.put64(&d, areaLength, at: 8)
        return d
    }

    /// The pointer blob in the qcow2 file held by `source`, nil when it has none; typed errors
    /// for an extension or area that does not fit the file.
    public static func find(in source: any BlockSource) throws -> [UInt8]? {
        let head = try source.read(at: 0, count: Int(min(source.size, 4096)))
        var h = try QCOW2Header.parse(head)
        if h.clusterSize > 4096 && source.size > 4096 {
            h = try QCOW2Header.parse(try source.read(at: 0, count: Int(min(source.size, h.clusterSize))))
        }
        guard let e = h.extensions.first(where: { $0.type == QCOW2.extPluginPointer }) else { return nil }
        func err(_ why: String) -> FormatError { FormatError(QCOW2.formatName, "plugin pointer extension", at: e.offset, why) }
        guard e.data.count == extensionLength else { throw err("\(e.data.count) bytes, not \(extensionLength)") }
        let off = QCOW2BE.u64(e.data, 0), len = QCOW2BE.u64(e.data, 8)
        guard len >= 4, len <= 64 << 20, off < source.size, len <= source.size - off else {
            throw err("pointer area of \(len) bytes at \(QCOW2.hex(off)) lies outside the file (\(QCOW2.hex(source.size)))")
        }
        let n = UInt64(QCOW2BE.u32(try source.read(at: off, count: 4), 0))
        guard n <= len - 4 else {
            throw FormatError(QCOW2.formatName, "plugin pointer area", at: off, "blob length \(n) exceeds the \(len - 4)-byte area")
        }
        return try source.read(at: off + 4, count: Int(n))
    }
}

/// The feature name table header extension (qcow2.txt "Feature name table"): 48-byte entries of
/// type (0 incompatible, 1 compatible, 2 autoclear), bit number and a NUL-padded name, the
/// features QEMU 7.2 names, in its order.
public enum QCOW2FeatureNameTable {
    public static let minimumClusterSize: UInt64 = 8192
    public static let entries: [(UInt8, UInt8, String)] = [
        (0, 0, "dirty bit"), (0, 1, "corrupt bit"), (0, 2, "external data file"), (0, 3, "compression type"),
        (0, 4, "extended L2 entries"), (1, 0, "lazy refcounts"), (2, 0, "bitmaps"), (2, 1, "raw external data"),
    ]
    public static let bytes: [UInt8] = entries.flatMap { type, bit, name -> [UInt8] in
        var e = [UInt8](repeating: 0, count: 48)
        e[0] = type
        e[1] = bit
        e.replaceSubrange(2..<2 + name.utf8.count, with: Array(name.utf8))
        return e
    }
}

/// Where every structure of a synthesized qcow2 goes (docs/formats/qcow2.md). A pure function of
/// the virtual size, the cluster size, which virtual clusters hold data, and whether a plugin
/// pointer area is present — never of the data.
///
/// Clusters, in file order: 0 header (+ extensions) · refcount table · refcount blocks · L1 table
/// · one L2 table per L1 entry that covers allocated clusters, in L1 order · data clusters in
/// virtual order. Every cluster of the file has refcount 1; the file is exactly
/// `totalClusters` clusters long.
public struct QCOW2Skeleton: Sendable, Equatable {
    public let clusterBits: UInt32
    public let clusterSize: UInt64
    public let virtualSize: UInt64
    /// Entries per L2 table (cluster / 8) and per refcount block (cluster·8 / 16).
    public let l2Entries: UInt64
    public let refcountsPerBlock: UInt64
    public let l1Entries: UInt64
    public let l1Clusters: UInt64
    public let refcountTableClusters: UInt64
    public let refcountBlocks: UInt64
    /// L1 indices that get an L2 table, ascending.
    public let l2Tables: [UInt64]
    public let dataClusters: UInt64
    /// Clusters of the file, the plugin pointer area included.
    public let totalClusters: UInt64
    /// Clusters of the plugin pointer area (from cluster 1), 0 without a pointer.
    public let pointerAreaClusters: UInt64

    public var pointerAreaOffset: UInt64 { clusterSize }
    public var refcountTableOffset: UInt64 { (1 + pointerAreaClusters) * clusterSize }
    public var refcountBlocksOffset: UInt64 { refcountTableOffset + refcountTableClusters * clusterSize }
    public var l1Offset: UInt64 { refcountBlocksOffset + refcountBlocks * clusterSize }
    public var l2Offset: UInt64 { l1Offset + l1Clusters * clusterSize }
    /// The first data cluster: everything before it is the skeleton.
    public var payloadStart: UInt64 { l2Offset + UInt64(l2Tables.count) * clusterSize }
    public var fileSize: UInt64 { totalClusters * clusterSize }

    public let header: QCOW2Header

    /// - Parameters:
    ///   - l2Tables: the L1 indices covering at least one allocated cluster, ascending.
    ///   - withPointerArea: whether the file carries a plugin pointer area.
    public init(virtualSize: UInt64, clusterBits: UInt32, l2Tables: [UInt64], dataClusters: UInt64, withPointerArea: Bool) throws {
        guard (QCOW2.minClusterBits...QCOW2.maxClusterBits).contains(clusterBits) else {
            throw QCOW2ViewError.invalidClusterSize(clusterBits < 64 ? 1 << UInt64(clusterBits) : 0)
        }
        guard virtualSize % 512 == 0 else { throw QCOW2ViewError.virtualSizeNotSectorMultiple(virtualSize) }
        let c: UInt64 = 1 << UInt64(clusterBits)
        self.clusterBits = clusterBits
        clusterSize = c
        self.virtualSize = virtualSize
        l2Entries = c / 8
        refcountsPerBlock = c * 8 / 16
        let l1 = QCOW2.divRoundUp(virtualSize, c * l2Entries)
        guard virtualSize <= QCOW2.maxVirtualSize, l1 * 8 <= QCOW2.maxL1Bytes else { throw QCOW2ViewError.virtualSizeTooLarge(virtualSize) }
        l1Entries = l1
        l1Clusters = QCOW2.divRoundUp(l1 * 8, c)
        self.l2Tables = l2Tables
        self.dataClusters = dataClusters
        let k = withPointerArea ? QCOW2PluginPointerArea.clusters(clusterSize: c) : 0
        pointerAreaClusters = k
        // Refcount structures count themselves: iterate to the fixed point (it only grows). The
        // refcount blocks cover every cluster of the file, the pointer area's (refcount 0) too.
        let base = 1 + k + l1Clusters + UInt64(l2Tables.count) + dataClusters
        var rt: UInt64 = 1, rb: UInt64 = 0
        while true {
            let nrb = QCOW2.divRoundUp(base + rt + rb, refcountsPerBlock)
            let nrt = max(1, QCOW2.divRoundUp(nrb * 8, c))
            if nrb == rb && nrt == rt { break }
            rb = nrb; rt = nrt
        }
        refcountTableClusters = rt
        refcountBlocks = rb
        totalClusters = base + rt + rb

        var h = QCOW2Header()
        h.version = 3
        h.clusterBits = clusterBits
        h.size = virtualSize
        h.l1Size = UInt32(l1)
        h.l1TableOffset = (1 + k + rt + rb) * c
        h.refcountTableOffset = (1 + k) * c
        h.refcountTableClusters = UInt32(rt)
        h.refcountOrder = QCOW2.refcountOrder
        h.headerLength = UInt32(QCOW2.v3HeaderLength)
        // The feature name table, as qemu-img writes it for clusters of 8 KiB and more (it leaves
        // it out of smaller ones), so our file equals qemu-img convert's for the same disk.
        var at = UInt64(QCOW2.v3HeaderLength)
        if c >= QCOW2FeatureNameTable.minimumClusterSize {
            let t = QCOW2FeatureNameTable.bytes
            h.extensions.append(QCOW2HeaderExtension(type: QCOW2.extFeatureNameTable, data: t, offset: at + 8))
            at += 8 + UInt64(t.count)
        }
        if withPointerArea {
            h.extensions.append(QCOW2HeaderExtension(type: QCOW2.extPluginPointer,
                                                     data: QCOW2PluginPointerArea.extensionData(areaOffset: c, areaLength: k * c),
                                                     offset: at + 8))
        }
        header = h
    }

    /// Rank of L1 index `k` among the L2 tables, or nil when it has none.
    public func l2Rank(ofL1Index k: UInt64) -> Int? {
        var lo = 0, hi = l2Tables.count
        while lo < hi {
            let m = (lo + hi) / 2
            if l2Tables[m] < k { lo = m + 1 } else { hi = m }
        }
        return lo < l2Tables.count && l2Tables[lo] == k ? lo : nil
    }

    /// The L1 entry `k`: its L2 table's offset with COPIED set, or 0.
    public func l1Entry(_ k: UInt64) -> UInt64 {
        guard let r = l2Rank(ofL1Index: k) else { return 0 }
        return (l2Offset + UInt64(r) * clusterSize) | QCOW2.copiedFlag
    }

    /// Refcount table entry `i`: refcount block i's offset, or 0 past the last block.
    public func refcountTableEntry(_ i: UInt64) -> UInt64 {
        i < refcountBlocks ? refcountBlocksOffset + i * clusterSize : 0
    }

    /// The refcount of host cluster `i`: 1 for every cluster of the file but the pointer area's.
    public func refcount(ofCluster i: UInt64) -> UInt16 {
        i < totalClusters && !(i >= 1 && i < 1 + pointerAreaClusters) ? 1 : 0
    }
}
