import BlockCore

/// A FAT32 file system computed from a list of files, deterministically, as a block source:
/// what the synthesized EFI System Partition is made of (docs/uefi.md). Write-only by design:
/// BootLab never parses FAT from untrusted input, so there is no reader here.
///
/// Layout (Microsoft's FAT specification, "fatgen103", and UEFI 2.10 §13.3 — the ESP is FAT32
/// on fixed media):
/// - sector 0: boot sector with the FAT32 BPB; sector 1: FSInfo; sector 6: the backup boot
///   sector (BPB_BkBootSec), sector 7: the backup FSInfo; 32 reserved sectors;
/// - two FATs of `fatSectors` each; FAT[0] = 0x0FFFFFF8 (media F8), FAT[1] = 0x0FFFFFFF
///   (clean-shutdown and no-error bits set);
/// - the data region from cluster 2: the root directory first, then every directory and file in
///   pre-order (names sorted), each contiguous.
/// Everything that a formatter takes from the clock (volume ID, file times) comes from `Options`.
public struct FAT32Image: BlockSource {
    public struct Options: Sendable, Equatable {
        /// Size of the file system in bytes (a multiple of `sectorSize`).
        public var size: UInt64
        /// 512 or 4096.
        public var sectorSize: Int
        /// BS_VolID: the serial number `blkid` shows as `XXXX-XXXX`.
        public var volumeID: UInt32
        /// BS_VolLab and the root directory's volume-label entry: up to 11 characters of 8.3 set.
        public var label: String
        /// BPB_HiddSec: the partition's first LBA on its disk.
        public var hiddenSectors: UInt32
        /// Every directory entry's creation, write and access time.
        public var timestamp: Timestamp

        public init(size: UInt64, sectorSize: Int = 512, volumeID: UInt32, label: String = "EFI",
                    hiddenSectors: UInt32 = 0, timestamp: Timestamp = .init()) {
            self.size = size
            self.sectorSize = sectorSize
            self.volumeID = volumeID
            self.label = label
            self.hiddenSectors = hiddenSectors
            self.timestamp = timestamp
        }
    }

    /// A DOS date and time (2-second resolution, 1980–2107). The default is 2020-01-01 00:00:00.
    public struct Timestamp: Sendable, Equatable {
        public var year = 2020, month = 1, day = 1, hour = 0, minute = 0, second = 0
        public init() {}
        public init(year: Int, month: Int, day: Int, hour: Int = 0, minute: Int = 0, second: Int = 0) {
            self.year = year; self.month = month; self.day = day
            self.hour = hour; self.minute = minute; self.second = second
        }
        var date: UInt16 { UInt16(((year - 1980) & 0x7F) << 9 | (month & 0xF) << 5 | (day & 0x1F)) }
        var time: UInt16 { UInt16((hour & 0x1F) << 11 | (minute & 0x3F) << 5 | ((second / 2) & 0x1F)) }
        var isValid: Bool {
            (1980...2107).contains(year) && (1...12).contains(month) && (1...31).contains(day)
                && (0...23).contains(hour) && (0...59).contains(minute) && (0...59).contains(second)
        }
    }

    /// One file: an absolute path of 8.3 names (`/EFI/BOOT/BOOTX64.EFI`) and its bytes.
    public struct File: Sendable, Equatable {
        public var path: String
        public var bytes: [UInt8]
        public init(path: String, bytes: [UInt8]) { self.path = path; self.bytes = bytes }
    }

    public enum WriterError: Error, CustomStringConvertible, Equatable, Sendable {
        case sectorSize(Int)
        case size(UInt64, String)
        /// Fewer clusters than FAT32 allows at any cluster size (the count decides the FAT type).
        case tooFewClusters(size: UInt64, sectorSize: Int, clusters: UInt64)
        case name(path: String, reason: String)
        case doesNotFit(neededClusters: UInt64, availableClusters: UInt64)
        case timestamp(String)

        public var description: String {
            switch self {
            case .sectorSize(let s): return "FAT32: sector size \(s) is not 512 or 4096"
            case .size(let s, let why): return "FAT32: size \(s) bytes: \(why)"
            case .tooFewClusters(let size, let ss, let n):
                return "FAT32: \(size) bytes with \(ss)-byte sectors give at most \(n) clusters; FAT32 needs at least \(FAT32Image.minimumClusters) (use at least \(FAT32Image.minimumSize(sectorSize: ss)) bytes)"
            case .name(let p, let why): return "FAT32: \(p): \(why)"
            case .doesNotFit(let need, let have): return "FAT32: the files need \(need) clusters; the file system has \(have)"
            case .timestamp(let s): return "FAT32: timestamp \(s) is outside what a DOS date can hold (1980–2107)"
            }
        }
    }

    /// A volume with fewer clusters is FAT12/16 by definition (fatgen103, "FAT Type
    /// Determination"); 65536 keeps a margin above the 65525 threshold that every implementation
    /// (and dosfstools' 65529) accepts.
    public static let minimumClusters: UInt64 = 65536
    static let reservedSectors = 32
    static let fsInfoSector = 1
    static let backupBootSector = 6
    static let rootCluster: UInt32 = 2
    static let endOfChain: UInt32 = 0x0FFF_FFFF

    /// The smallest size this writer accepts for a sector size: 65536 one-sector clusters plus
    /// the reserved sectors and two FATs, rounded up to a MiB (33 MiB for 512, 258 MiB for 4096).
    public static func minimumSize(sectorSize: Int) -> UInt64 {
        let fat = (minimumClusters + 2) * 4
        let fatSectors = (fat + UInt64(sectorSize) - 1) / UInt64(sectorSize)
        let bytes = (UInt64(reservedSectors) + 2 * fatSectors + minimumClusters) * UInt64(sectorSize)
        return (bytes + 0xFFFFF) / 0x100000 * 0x100000
    }

    public let options: Options
    public let sectorsPerCluster: Int
    public let fatSectors: Int
    public let clusterCount: UInt64
    /// Clusters holding directories and files.
    public let usedClusters: UInt64
    public var size: UInt64 { options.size }
    /// Sorted, non-overlapping byte runs; everything else reads as zeros.
    private let regions: [(offset: UInt64, bytes: [UInt8])]

    public init(options: Options, files: [File]) throws {
        let ss = options.sectorSize
        guard ss == 512 || ss == 4096 else { throw WriterError.sectorSize(ss) }
        guard options.size % UInt64(ss) == 0 else { throw WriterError.size(options.size, "not a multiple of the \(ss)-byte sector") }
        guard options.timestamp.isValid else { throw WriterError.timestamp("\(options.timestamp)") }
        let totalSectors = options.size / UInt64(ss)
        guard totalSectors <= UInt64(UInt32.max) else { throw WriterError.size(options.size, "more than 2^32 sectors") }
        let label = try Self.shortName(options.label.isEmpty ? "NO NAME" : options.label, path: "volume label", isLabel: true)

        // The largest cluster (≤ 32 KiB) that still leaves enough clusters: fewer FAT sectors.
        var geometry: (spc: Int, fat: Int, clusters: UInt64)?
        var spc = 32768 / ss
        var best: UInt64 = 0
        while spc >= 1 {
            let g = Self.geometry(totalSectors: totalSectors, sectorSize: ss, sectorsPerCluster: spc)
            best = max(best, g.clusters)
            if g.clusters >= Self.minimumClusters, g.clusters <= 0x0FFF_FFF4 { geometry = (spc, g.fat, g.clusters); break }
            spc /= 2
        }
        guard let geo = geometry else { throw WriterError.tooFewClusters(size: options.size, sectorSize: ss, clusters: best) }
        self.options = options
        self.sectorsPerCluster = geo.spc
        self.fatSectors = geo.fat
        self.clusterCount = geo.clusters

        // The tree, then cluster allocation in pre-order (root first, at cluster 2).
        let root = try Self.tree(files)
        let clusterBytes = ss * geo.spc
        var next: UInt32 = Self.rootCluster
        var fat: [UInt32] = [0x0FFF_FFF8, Self.endOfChain]
        func allocate(_ bytes: Int) -> UInt32 {
            let n = max(1, (bytes + clusterBytes - 1) / clusterBytes)
            let first = next
            for i in 0..<n {
                let c = Int(first) + i
                while fat.count <= c { fat.append(0) }
                fat[c] = i == n - 1 ? Self.endOfChain : UInt32(c + 1)
            }
            next += UInt32(n)
            return first
        }
        func assign(_ dir: Node, isRoot: Bool) {
            let entries = dir.children.count + (isRoot ? 1 : 2)
            dir.cluster = allocate(entries * 32)
            for child in dir.children {
                if child.isDirectory { assign(child, isRoot: false) }
                else if !child.bytes.isEmpty { child.cluster = allocate(child.bytes.count) }
            }
        }
        assign(root, isRoot: true)
        let used = UInt64(next - Self.rootCluster)
        guard used <= geo.clusters else { throw WriterError.doesNotFit(neededClusters: used, availableClusters: geo.clusters) }
        self.usedClusters = used

        // Encoding.
        let dataStart = UInt64(Self.reservedSectors + 2 * geo.fat) * UInt64(ss)
        func clusterOffset(_ c: UInt32) -> UInt64 { dataStart + UInt64(c - 2) * UInt64(clusterBytes) }
        var regions: [(UInt64, [UInt8])] = []
        let boot = Self.bootSector(options: options, label: label, totalSectors: UInt32(totalSectors), spc: geo.spc, fatSectors: geo.fat)
        let info = Self.fsInfo(sectorSize: ss, free: UInt32(geo.clusters - used), nextFree: next)
        regions.append((0, boot + info))
        regions.append((UInt64(Self.backupBootSector * ss), boot + info))
        var fatBytes: [UInt8] = []
        fatBytes.reserveCapacity(fat.count * 4)
        for e in fat { fatBytes.appendLE32(e) }
        for copy in 0..<2 { regions.append((UInt64(Self.reservedSectors + copy * geo.fat) * UInt64(ss), fatBytes)) }
        let stamp = options.timestamp
        func emit(_ dir: Node, parent: Node?, isRoot: Bool) {
            var bytes: [UInt8] = []
            if isRoot {
                bytes += Self.entry(name: label, attributes: 0x08, cluster: 0, size: 0, stamp: stamp)
            } else {
                bytes += Self.entry(name: Array(".          ".utf8), attributes: 0x10, cluster: dir.cluster, size: 0, stamp: stamp)
                // ".." names cluster 0 when the parent is the root (fatgen103, "FAT Directory Structure").
                let up = parent.map { $0 === root ? 0 : $0.cluster } ?? 0
                bytes += Self.entry(name: Array("..         ".utf8), attributes: 0x10, cluster: up, size: 0, stamp: stamp)
            }
            for child in dir.children {
                bytes += Self.entry(name: child.name, attributes: child.isDirectory ? 0x10 : 0x20, cluster: child.cluster,
                                    size: child.isDirectory ? 0 : UInt32(child.bytes.count), stamp: stamp)
            }
            // The rest of a directory's clusters must read as zeros (end-of-directory marks).
            let rounded = (bytes.count + clusterBytes - 1) / clusterBytes * clusterBytes
            bytes += [UInt8](repeating: 0, count: rounded - bytes.count)
            regions.append((clusterOffset(dir.cluster), bytes))
            for child in dir.children {
                if child.isDirectory { emit(child, parent: dir, isRoot: false) }
                else if !child.bytes.isEmpty { regions.append((clusterOffset(child.cluster), child.bytes)) }
            }
        }
        emit(root, parent: nil, isRoot: true)
        self.regions = regions.sorted { $0.0 < $1.0 }.map { (offset: $0.0, bytes: $0.1) }
    }

    /// fatgen103's FAT size computation for FAT32, then the cluster count it leaves.
    static func geometry(totalSectors: UInt64, sectorSize: Int, sectorsPerCluster spc: Int) -> (fat: Int, clusters: UInt64) {
        let reserved = UInt64(reservedSectors)
        guard totalSectors > reserved else { return (0, 0) }
        // fatgen103: TmpVal1 = DskSize − ResvdSecCnt; TmpVal2 = (256·SecPerClus + NumFATs) / 2 for FAT32,
        // scaled for sectors other than 512 bytes (entries per sector = sectorSize / 4).
        let tmp1 = totalSectors - reserved
        let tmp2 = (UInt64(sectorSize / 4) * UInt64(spc) + 2)
        var fat = (tmp1 + tmp2 - 1) / tmp2
        // The computation may overshoot by a sector or two, never undershoot; check it covers.
        let dataSectors = tmp1 > 2 * fat ? tmp1 - 2 * fat : 0
        let clusters = dataSectors / UInt64(spc)
        let needed = ((clusters + 2) * 4 + UInt64(sectorSize) - 1) / UInt64(sectorSize)
        if needed > fat { fat = needed }
        let data2 = tmp1 > 2 * fat ? tmp1 - 2 * fat : 0
        return (Int(fat), data2 / UInt64(spc))
    }

    // MARK: structures

    static func bootSector(options o: Options, label: [UInt8], totalSectors: UInt32, spc: Int, fatSectors: Int) -> [UInt8] {
        var s = [UInt8](repeating: 0, count: o.sectorSize)
        s.put([0xEB, 0x58, 0x90], at: 0)                 // BS_jmpBoot to the code at 0x5A
        s.put(Array("BOOTLAB ".utf8), at: 3)             // BS_OEMName
        s.putLE16(UInt16(o.sectorSize), at: 0x0B)        // BPB_BytsPerSec
        s[0x0D] = UInt8(spc)                             // BPB_SecPerClus
        s.putLE16(UInt16(reservedSectors), at: 0x0E)     // BPB_RsvdSecCnt
        s[0x10] = 2                                      // BPB_NumFATs
        // BPB_RootEntCnt, BPB_TotSec16, BPB_FATSz16 stay 0 on FAT32.
        s[0x15] = 0xF8                                   // BPB_Media: fixed disk
        s.putLE16(63, at: 0x18)                          // BPB_SecPerTrk
        s.putLE16(255, at: 0x1A)                         // BPB_NumHeads
        s.putLE32(o.hiddenSectors, at: 0x1C)             // BPB_HiddSec
        s.putLE32(totalSectors, at: 0x20)                // BPB_TotSec32
        s.putLE32(UInt32(fatSectors), at: 0x24)          // BPB_FATSz32
        // BPB_ExtFlags 0 (FATs mirrored), BPB_FSVer 0.0
        s.putLE32(rootCluster, at: 0x2C)                 // BPB_RootClus
        s.putLE16(UInt16(fsInfoSector), at: 0x30)        // BPB_FSInfo
        s.putLE16(UInt16(backupBootSector), at: 0x32)    // BPB_BkBootSec
        s[0x40] = 0x80                                   // BS_DrvNum
        s[0x42] = 0x29                                   // BS_BootSig: the next three fields exist
        s.putLE32(o.volumeID, at: 0x43)                  // BS_VolID
        s.put(label, at: 0x47)                           // BS_VolLab
        s.put(Array("FAT32   ".utf8), at: 0x52)          // BS_FilSysType (informational)
        // Not bootable by a BIOS: the code halts (cli; hlt; jmp $-1).
        s.put([0xFA, 0xF4, 0xEB, 0xFD], at: 0x5A)
        s[510] = 0x55; s[511] = 0xAA
        return s
    }

    static func fsInfo(sectorSize: Int, free: UInt32, nextFree: UInt32) -> [UInt8] {
        var s = [UInt8](repeating: 0, count: sectorSize)
        s.putLE32(0x4161_5252, at: 0)      // FSI_LeadSig
        s.putLE32(0x6141_7272, at: 484)    // FSI_StrucSig
        s.putLE32(free, at: 488)           // FSI_Free_Count
        s.putLE32(nextFree, at: 492)       // FSI_Nxt_Free
        s.putLE32(0xAA55_0000, at: 508)    // FSI_TrailSig
        return s
    }

    static func entry(name: [UInt8], attributes: UInt8, cluster: UInt32, size: UInt32, stamp: Timestamp) -> [UInt8] {
        var e = [UInt8](repeating: 0, count: 32)
        e.put(name, at: 0)
        e[11] = attributes
        let timeFields = attributes & 0x08 == 0
        if timeFields {
            e.putLE16(stamp.time, at: 14)           // DIR_CrtTime
            e.putLE16(stamp.date, at: 16)           // DIR_CrtDate
            e.putLE16(stamp.date, at: 18)           // DIR_LstAccDate
        }
        e.putLE16(UInt16(cluster >> 16), at: 20)    // DIR_FstClusHI
        e.putLE16(stamp.time, at: 22)               // DIR_WrtTime
        e.putLE16(stamp.date, at: 24)               // DIR_WrtDate
        e.putLE16(UInt16(cluster & 0xFFFF), at: 26) // DIR_FstClusLO
        e.putLE32(size, at: 28)                     // DIR_FileSize
        return e
    }

    // MARK: names and the tree

    final class Node {
        let name: [UInt8]
        let isDirectory: Bool
        var bytes: [UInt8] = []
        var children: [Node] = []
        var cluster: UInt32 = 0
        init(name: [UInt8], isDirectory: Bool) { self.name = name; self.isDirectory = isDirectory }
    }

    /// Short-name characters fatgen103 allows, restricted to what needs no case mapping: this
    /// writer stores 8.3 names only (no long-name entries), so every name must already be one.
    static let allowed = Set(Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'()-@^_`{}~".utf8))

    /// `BOOTX64.EFI` → `BOOTX64 EFI` (11 bytes, space padded).
    static func shortName(_ text: String, path: String, isLabel: Bool = false) throws -> [UInt8] {
        let utf8 = Array(text.utf8)
        if isLabel {
            guard !utf8.isEmpty, utf8.count <= 11, utf8.allSatisfy({ allowed.contains($0) || $0 == 0x20 }) else {
                throw WriterError.name(path: path, reason: "'\(text)' is not an 11-character upper-case label")
            }
            return utf8 + [UInt8](repeating: 0x20, count: 11 - utf8.count)
        }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, let base = parts.first, !base.isEmpty, base.utf8.count <= 8,
              (parts.count == 1 || (1...3).contains(parts[1].utf8.count)),
              utf8.allSatisfy({ allowed.contains($0) || $0 == 0x2E }) else {
            throw WriterError.name(path: path, reason: "'\(text)' is not an upper-case 8.3 name (this writer stores no long names)")
        }
        let ext = parts.count == 2 ? Array(parts[1].utf8) : []
        return Array(base.utf8) + [UInt8](repeating: 0x20, count: 8 - base.utf8.count) + ext + [UInt8](repeating: 0x20, count: 3 - ext.count)
    }

    static func tree(_ files: [File]) throws -> Node {
        let root = Node(name: [], isDirectory: true)
        for f in files {
            guard f.path.hasPrefix("/") else { throw WriterError.name(path: f.path, reason: "not an absolute path") }
            guard f.bytes.count < Int(UInt32.max) else { throw WriterError.name(path: f.path, reason: "larger than 4 GiB − 1") }
            let comps = f.path.split(separator: "/").map(String.init)
            guard !comps.isEmpty else { throw WriterError.name(path: f.path, reason: "no file name") }
            var dir = root
            for (i, c) in comps.enumerated() {
                let name = try shortName(c, path: f.path)
                let last = i == comps.count - 1
                if let existing = dir.children.first(where: { $0.name == name }) {
                    guard !last, existing.isDirectory else {
                        throw WriterError.name(path: f.path, reason: "'\(c)' is given twice or both as a file and a directory")
                    }
                    dir = existing
                } else {
                    let node = Node(name: name, isDirectory: !last)
                    if last { node.bytes = f.bytes }
                    dir.children.append(node)
                    dir = node
                }
            }
        }
        func sort(_ n: Node) {
            n.children.sort { $0.name.lexicographicallyPrecedes($1.name) }
            n.children.forEach(sort)
        }
        sort(root)
        return root
    }

    // MARK: BlockSource

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        buffer.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count)
        let end = offset + UInt64(buffer.count)
        for r in regions {
            let rEnd = r.offset + UInt64(r.bytes.count)
            if r.offset >= end { break }
            guard rEnd > offset else { continue }
            let from = max(r.offset, offset), to = min(rEnd, end)
            r.bytes.withUnsafeBytes { src in
                UnsafeMutableRawBufferPointer(rebasing: buffer[Int(from - offset)..<Int(to - offset)])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: src[Int(from - r.offset)..<Int(to - r.offset)]))
            }
        }
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out: [Extent] = []
        var pos = r.lowerBound
        for region in regions {
            let rr = (region.offset..<(region.offset + UInt64(region.bytes.count))).clamped(to: pos..<r.upperBound)
            guard !rr.isEmpty else { continue }
            if rr.lowerBound > pos { out.append(Extent(offset: pos, length: rr.lowerBound - pos, kind: .zero)) }
            out.append(Extent(offset: rr.lowerBound, length: UInt64(rr.count), kind: .data))
            pos = rr.upperBound
        }
        if pos < r.upperBound { out.append(Extent(offset: pos, length: r.upperBound - pos, kind: .zero)) }
        return coalesce(out)
    }
}
