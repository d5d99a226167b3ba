import BlockCore
import DiskFormats
import BackupImage

/// A starting file: from BootLab's own writers (named by its parameters) or from `--seeds DIR`.
public struct Seed: Sendable, Equatable {
    public var name: String
    public var bytes: [UInt8]
    public init(name: String, bytes: [UInt8]) { self.name = name; self.bytes = bytes }
}

/// One format the fuzzer knows: how to make valid seeds, where its fields and checksums are in a
/// given file (found by parsing leniently, so it works on mutants too), and BootLab's own reader
/// for the in-process mode.
public protocol FuzzFormat: Sendable {
    var name: String { get }
    var fileExtension: String { get }
    /// `count` varied valid files, deterministic in `random`.
    func seeds(count: Int, random: inout FuzzRandom) throws(FuzzError) -> [Seed]
    /// The structure map of `bytes`, as far as they parse.
    func map(_ bytes: [UInt8]) -> StructureMap
    /// BootLab's own reader on the file at `path`: open, check, read every byte. A thrown error
    /// is a clean rejection.
    func readInProcess(path: String) throws
}

public enum FuzzFormats {
    public static let all: [any FuzzFormat] = [
        VHDXFuzzFormat(), MBRFuzzFormat(), GPTFuzzFormat(), BLIFuzzFormat(),
        DriverFuzzFormat(name: "vmdk", fileExtension: "vmdk", header: FieldMaps.vmdk),
        DriverFuzzFormat(name: "vhd", fileExtension: "vhd", header: FieldMaps.vhd),
        DriverFuzzFormat(name: "qcow2", fileExtension: "qcow2", header: FieldMaps.qcow2),
        DriverFuzzFormat(name: "vdi", fileExtension: "vdi", header: FieldMaps.vdi),
    ]
    public static var names: [String] { all.map(\.name) }

    public static func named(_ name: String) throws(FuzzError) -> any FuzzFormat {
        guard let f = all.first(where: { $0.name == name.lowercased() }) else { throw .unknownFormat(name, known: names) }
        return f
    }

    /// Reads every byte of a block source in 1 MiB pieces (bounded: at most 256 MiB).
    static func drain(_ s: any BlockSource) throws {
        var off: UInt64 = 0
        let end = min(s.size, 256 << 20)
        while off < end {
            let n = Int(min(1 << 20, end - off))
            _ = try s.read(at: off, count: n)
            off += UInt64(n)
        }
    }

    /// A small virtual disk with a few allocated pieces (an allocation pattern from `random`).
    static func disk(size: Int, pieces: Int, random: inout FuzzRandom) -> MemorySource {
        var b = [UInt8](repeating: 0, count: size)
        for _ in 0..<pieces {
            let len = min(size, 4096 * (1 + random.below(32)))
            let at = random.below(max(1, (size - len) / 4096)) * 4096
            let fill = UInt8(truncatingIfNeeded: random.next() | 1)
            for i in at..<at + len { b[i] = fill &+ UInt8(truncatingIfNeeded: i >> 9) }
        }
        return MemorySource(b)
    }

    /// The bytes of a view, whole.
    static func render(_ s: any BlockSource) throws -> [UInt8] { try s.read(at: 0, count: Int(s.size)) }
}

// MARK: VHDX

public struct VHDXFuzzFormat: FuzzFormat {
    public let name = "vhdx"
    public let fileExtension = "vhdx"
    public init() {}

    public func seeds(count: Int, random: inout FuzzRandom) throws(FuzzError) -> [Seed] {
        guard let driver = DiskFormatRegistry.driver(named: "vhdx") else { throw .driverMissing("vhdx") }
        var out: [Seed] = []
        for i in 0..<count {
            let size = [1, 3, 4, 8, 16, 5][i % 6] << 20 + (i % 4 == 3 ? 4096 * random.below(64) : 0)
            let block: UInt64 = [1, 2, 4, 8, 32][random.below(5)] << 20
            let lss: UInt32 = random.percent(30) ? 4096 : 512
            // Allocated blocks cost a whole block in the file: big blocks stay unallocated.
            let src = FuzzFormats.disk(size: size, pieces: block > 1 << 20 ? 0 : random.below(3), random: &random)
            var o = NativeFormatOptions(logicalSectorSize: lss, allocationUnit: block, seed: random.bytes(16))
            if lss == 4096 || random.percent(30) { o.keys["physical_sector_size"] = "4096" }
            do {
                var bytes = try FuzzFormats.render(try driver.view(of: src, options: o))
                var name = "vhdx-\(size)-bs\(block >> 20)M-lss\(lss)"
                if i % 3 == 2 { addLog(&bytes, random: &random); name += "-log" }
                out.append(Seed(name: name, bytes: bytes))
                if i % 6 == 4, let child = try? selfParentChild(of: bytes) { out.append(Seed(name: name + "-diff-loop", bytes: child)) }
            } catch {
                throw .seed("VHDX view of \(size) bytes, block \(block): \(error)")
            }
        }
        return out
    }

    /// A differencing child whose parent chain loops: its parent locator's relative_path names
    /// `input.vhdx` (the name every run's input has) and its DataWriteGuid equals the
    /// parent_linkage it records, so a reader that follows the chain opens the child itself again.
    func selfParentChild(of parent: [UInt8]) throws -> [UInt8] {
        let dir = FileSystem.temporaryDirectory(prefix: "bootlab-fuzz-diff")
        defer { FileSystem.removeTree(dir) }
        try FileSystem.write(parent, to: dir + "/input.\(fileExtension)")
        let childPath = dir + "/child.\(fileExtension)"
        _ = try VHDXFile.createDifferencing(path: childPath, parentPath: dir + "/input.\(fileExtension)", seed: Array("fuzz".utf8))
        var b = try FileSystem.read(childPath)
        // absolute_win32_path names the random temporary directory: same-length fixed name, so
        // the seed is a function of the campaign seed alone.
        let name = String(dir.split(separator: "/").last ?? "")
        let fixed = String(name.dropLast(6)) + "000000"
        let from = name.utf16.flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] }, to = fixed.utf16.flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] }
        if !from.isEmpty, from.count == to.count {
            var at = 0
            while at + from.count <= b.count {
                if b[at] == from[0], Array(b[at..<at + from.count]) == from { b.replaceSubrange(at..<at + from.count, with: to); at += from.count } else { at += 1 }
            }
        }
        let linkage = Array(parent[0x20000 + 32..<0x20000 + 48])   // the parent's current DataWriteGuid
        for h in [0x10000, 0x20000] {
            b.replaceSubrange(h + 32..<h + 48, with: linkage)
            ChecksumFixer.fix(&b, [ChecksumSpec("header", .crc32c, covered: h..<h + 4096, field: h + 4)])
        }
        return b
    }

    /// A log to replay: one entry at the log's start rewriting a 4 KiB sector of the metadata
    /// region, and the current header's LogGuid pointing at it.
    func addLog(_ b: inout [UInt8], random: inout FuzzRandom) {
        let guid = GUID(bytes: random.bytes(16))
        let logOffset = Int(b.value(at: 0x20000 + 72, width: 8, endian: .little))
        let target = UInt64(VHDXSkeleton.metadataOffset) + 0x10000
        var sector = Array(b[Int(target)..<Int(target) + 4096])
        sector[0] ^= 0   // same bytes: a replay must leave a consistent file
        let entry = VHDXLogEntry(sequenceNumber: 10 + UInt64(random.below(100)), tail: 0, logGuid: guid,
                                 flushedFileOffset: UInt64(b.count), lastFileOffset: UInt64(b.count),
                                 descriptors: [.data(fileOffset: target, sector: sector),
                                               .zero(fileOffset: UInt64(VHDXSkeleton.metadataOffset) + 0xF0000, length: 4096)]).serialize()
        guard logOffset > 0, logOffset + entry.count <= b.count else { return }
        b.replaceSubrange(logOffset..<logOffset + entry.count, with: entry)
        for h in [0x10000, 0x20000] where b.value(at: h + 8, width: 8, endian: .little) == 2 {
            b.replaceSubrange(h + 48..<h + 64, with: guid.bytes)
            ChecksumFixer.fix(&b, [ChecksumSpec("header", .crc32c, covered: h..<h + 4096, field: h + 4)])
        }
    }

    public func map(_ b: [UInt8]) -> StructureMap {
        var m = StructureMap()
        m.add(Field("file identifier", "Signature", 0, 8, .signature))
        m.structure(0..<0x10000)
        for (k, h) in [0x10000, 0x20000].enumerated() {
            let s = "header \(k + 1)"
            m.add(Field(s, "Signature", h, 4, .signature))
            m.add(Field(s, "Checksum", h + 4, 4, .checksum))
            m.add(Field(s, "SequenceNumber", h + 8, 8, .sequence))
            m.add(Field(s, "FileWriteGuid", h + 16, 16, .guid))
            m.add(Field(s, "DataWriteGuid", h + 32, 16, .guid))
            m.add(Field(s, "LogGuid", h + 48, 16, .guid))
            m.add(Field(s, "LogVersion", h + 64, 2, .version))
            m.add(Field(s, "Version", h + 66, 2, .version))
            m.add(Field(s, "LogLength", h + 68, 4, .size))
            m.add(Field(s, "LogOffset", h + 72, 8, .offset))
            m.checksums.append(ChecksumSpec(s, .crc32c, covered: h..<h + 4096, field: h + 4))
            m.structure(h..<h + 4096)
        }
        var regions: [(GUID, Int, Int)] = []
        for (k, r) in [0x30000, 0x40000].enumerated() {
            let s = "region table \(k + 1)"
            m.add(Field(s, "Signature", r, 4, .signature))
            m.add(Field(s, "Checksum", r + 4, 4, .checksum))
            m.add(Field(s, "EntryCount", r + 8, 4, .count))
            let n = Int(min(b.value(at: r + 8, width: 4, endian: .little), 8))
            for i in 0..<max(n, 2) {
                let e = r + 16 + 32 * i
                m.add(Field(s, "entry \(i).Guid", e, 16, .guid))
                m.add(Field(s, "entry \(i).FileOffset", e + 16, 8, .offset))
                m.add(Field(s, "entry \(i).Length", e + 24, 4, .size))
                m.add(Field(s, "entry \(i).Required", e + 28, 4, .flags))
                if k == 0, e + 32 <= b.count {
                    regions.append((GUID(bytes: Array(b[e..<e + 16])), bounded(b.value(at: e + 16, width: 8, endian: .little)),
                                    Int(b.value(at: e + 24, width: 4, endian: .little))))
                }
            }
            m.checksums.append(ChecksumSpec(s, .crc32c, covered: r..<r + 0x10000, field: r + 4))
            m.structure(r..<r + 0x10000)
        }
        if let md = regions.first(where: { $0.0 == VHDX.metadataRegion }), md.1 > 0, md.1 + 32 <= b.count {
            let t = md.1
            m.structure(t..<t + md.2)
            m.add(Field("metadata table", "Signature", t, 8, .signature))
            m.add(Field("metadata table", "EntryCount", t + 10, 2, .count))
            let n = Int(min(b.value(at: t + 10, width: 2, endian: .little), 16))
            for i in 0..<n {
                let e = t + 32 + 32 * i
                guard e + 32 <= b.count else { break }
                let id = GUID(bytes: Array(b[e..<e + 16]))
                let item = t + Int(b.value(at: e + 16, width: 4, endian: .little))
                let len = Int(b.value(at: e + 20, width: 4, endian: .little))
                let s = "metadata entry \(i)"
                m.add(Field(s, "ItemId", e, 16, .guid))
                m.add(Field(s, "Offset", e + 16, 4, .offset))
                m.add(Field(s, "Length", e + 20, 4, .size))
                m.add(Field(s, "Flags", e + 24, 4, .flags))
                guard item + 4 <= b.count, len > 0 else { continue }
                m.structure(item..<item + len)
                switch id {
                case VHDX.fileParametersItem:
                    m.add(Field("file parameters", "BlockSize", item, 4, .size))
                    m.add(Field("file parameters", "Flags", item + 4, 4, .flags))
                case VHDX.virtualDiskSizeItem: m.add(Field("virtual disk size", "VirtualDiskSize", item, 8, .size))
                case VHDX.logicalSectorSizeItem: m.add(Field("logical sector size", "LogicalSectorSize", item, 4, .size))
                case VHDX.physicalSectorSizeItem: m.add(Field("physical sector size", "PhysicalSectorSize", item, 4, .size))
                case VHDX.virtualDiskIDItem: m.add(Field("page 83 data", "VirtualDiskId", item, 16, .guid))
                case VHDX.parentLocatorItem:
                    m.add(Field("parent locator", "LocatorType", item, 16, .guid))
                    m.add(Field("parent locator", "KeyValueCount", item + 18, 2, .count))
                    for j in 0..<Int(min(b.value(at: item + 18, width: 2, endian: .little), 8)) {
                        let kv = item + 20 + 12 * j
                        m.add(Field("parent locator", "entry \(j).KeyOffset", kv, 4, .offset))
                        m.add(Field("parent locator", "entry \(j).ValueOffset", kv + 4, 4, .offset))
                        m.add(Field("parent locator", "entry \(j).KeyLength", kv + 8, 2, .size))
                        m.add(Field("parent locator", "entry \(j).ValueLength", kv + 10, 2, .size))
                    }
                default: m.add(Field("metadata item \(i)", "first bytes", item, 4, .other))
                }
            }
        }
        if let bat = regions.first(where: { $0.0 == VHDX.batRegion }), bat.1 > 0, bat.1 < b.count {
            m.structure(bat.1..<bat.1 + bat.2)
            // The first entries and the allocated ones among the first 4096 (a bounded scan).
            let entries = min(bat.2 / 8, (b.count - bat.1) / 8, 4096)
            var listed = 0
            for i in 0..<entries where listed < 48 {
                let e = bat.1 + 8 * i
                if i < 8 || b.value(at: e, width: 8, endian: .little) != 0 {
                    m.add(Field("BAT", "entry \(i).State", e, 1, .state))
                    m.add(Field("BAT", "entry \(i).FileOffsetMB", e + 2, 6, .offset, unit: 1 << 16))
                    listed += 1
                    let off = bounded(b.value(at: e, width: 8, endian: .little) >> 20) << 20
                    if off > 0, off < b.count { m.boundaries.append(off) }
                }
            }
        }
        // The log: entries from the log offset of header 2 (the current one in our seeds).
        let logOffset = bounded(b.value(at: 0x20000 + 72, width: 8, endian: .little))
        if logOffset > 0, logOffset + 64 <= b.count, Array(b[logOffset..<logOffset + 4]) == VHDX.logEntrySignature {
            let s = "log entry 0", l = logOffset
            let len = Int(b.value(at: l + 8, width: 4, endian: .little))
            m.add(Field(s, "Signature", l, 4, .signature))
            m.add(Field(s, "EntryLength", l + 8, 4, .size))
            m.add(Field(s, "Tail", l + 12, 4, .offset))
            m.add(Field(s, "SequenceNumber", l + 16, 8, .sequence))
            m.add(Field(s, "DescriptorCount", l + 24, 4, .count))
            m.add(Field(s, "LogGuid", l + 32, 16, .guid))
            m.add(Field(s, "FlushedFileOffset", l + 48, 8, .offset))
            m.add(Field(s, "LastFileOffset", l + 56, 8, .offset))
            for d in 0..<Int(min(b.value(at: l + 24, width: 4, endian: .little), 4)) {
                let e = l + 64 + 32 * d
                m.add(Field(s, "descriptor \(d).Signature", e, 4, .signature))
                m.add(Field(s, "descriptor \(d).Length", e + 8, 8, .size))
                m.add(Field(s, "descriptor \(d).FileOffset", e + 16, 8, .offset))
                m.add(Field(s, "descriptor \(d).SequenceNumber", e + 24, 8, .sequence))
            }
            if len >= 64, len <= 1 << 20, l + len <= b.count {
                m.checksums.append(ChecksumSpec(s, .crc32c, covered: l..<l + len, field: l + 4))
                m.structure(l..<l + len)
            }
        }
        return m
    }

    public func readInProcess(path: String) throws {
        guard let d = DiskFormatRegistry.driver(named: "vhdx") else { throw FuzzError.driverMissing("vhdx") }
        _ = try d.check(path: path)
        try FuzzFormats.drain(try d.open(path: path))
    }
}

// MARK: formats whose drivers arrive in parallel (vmdk, vhd, qcow2, vdi)

/// A format served by a `DiskFormatDriver`: seeds from its view, fields from its header map (from
/// the public specs), its tables from the header's values, and one byte per `structureSites` name.
public struct DriverFuzzFormat: FuzzFormat {
    public let name: String
    public let fileExtension: String
    let header: @Sendable ([UInt8]) -> StructureMap

    public func seeds(count: Int, random: inout FuzzRandom) throws(FuzzError) -> [Seed] {
        guard let driver = DiskFormatRegistry.driver(named: name) else { throw .driverMissing(name) }
        var out: [Seed] = []
        for i in 0..<count {
            let size = [1, 3, 4, 8, 2][i % 5] << 20
            let src = FuzzFormats.disk(size: size, pieces: 1 + random.below(4), random: &random)
            var o = NativeFormatOptions(seed: random.bytes(16))
            o.fileName = "input.\(fileExtension)"   // every run's input is named so (a VMDK's extent line names it)
            if driver.subformats.count > 1, i % 2 == 1 { o.subformat = driver.subformats[1] }
            do {
                let bytes = try FuzzFormats.render(try driver.view(of: src, options: o))
                out.append(Seed(name: "\(name)-\(size)-\(o.subformat ?? driver.subformats.first ?? "default")", bytes: bytes))
            } catch {
                // A subformat that is not a view (VMDK streamOptimized) falls back to the default.
                if o.subformat != nil, let bytes = try? FuzzFormats.render(try driver.view(of: src, options: NativeFormatOptions(seed: o.seed))) {
                    out.append(Seed(name: "\(name)-\(size)", bytes: bytes))
                } else {
                    throw .seed("\(name) view of \(size) bytes: \(error)")
                }
            }
        }
        return out
    }

    public func map(_ bytes: [UInt8]) -> StructureMap { header(bytes) }

    public func readInProcess(path: String) throws {
        guard let d = DiskFormatRegistry.driver(named: name) else { throw FuzzError.driverMissing(name) }
        _ = try d.check(path: path)
        try FuzzFormats.drain(try d.open(path: path))
    }

    /// `structureSites` as one-byte fields (the lab's catalog of structures), added to a map.
    public func sites(path: String) -> [Field] {
        guard let d = DiskFormatRegistry.driver(named: name), let s = try? d.structureSites(path: path) else { return [] }
        return s.sorted { $0.key < $1.key }.map { Field("site", $0.key, Int($0.value), 1, .other) }
    }
}
