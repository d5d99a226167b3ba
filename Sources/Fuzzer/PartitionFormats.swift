import BlockCore
import DiskFormats

/// MBR: sector 0 of a small disk with 1–4 primary partitions (no checksum).
public struct MBRFuzzFormat: FuzzFormat {
    public let name = "mbr"
    public let fileExtension = "img"
    public init() {}

    public func seeds(count: Int, random: inout FuzzRandom) throws(FuzzError) -> [Seed] {
        (0..<count).map { i in
            let n = 1 + i % 4
            var lba: UInt32 = [1, 63, 2048][random.below(3)]
            var parts: [MBR.Partition?] = []
            for k in 0..<4 {
                guard k < n else { parts.append(nil); continue }
                let len = UInt32(8 + random.below(120))
                parts.append(MBR.Partition(type: random.pick([0x83, 0x07, 0x0c, 0x05, 0x82]), bootable: k == 0, startLBA: lba, sectorCount: len))
                lba += len + UInt32(random.below(4))
            }
            var disk = MBR(diskSignature: UInt32(truncatingIfNeeded: random.next()), partitions: parts).encode()
            disk += [UInt8](repeating: 0, count: Int(lba) * 512 - disk.count)
            return Seed(name: "mbr-\(n)p-\(lba)s", bytes: disk)
        }
    }

    public func map(_ b: [UInt8]) -> StructureMap {
        var m = StructureMap()
        m.add(Field("MBR", "DiskSignature", 440, 4, .guid))
        m.add(Field("MBR", "BootSignature", 510, 2, .signature))
        for i in 0..<4 {
            let e = 446 + 16 * i, s = "partition \(i + 1)"
            m.add(Field(s, "BootIndicator", e, 1, .flags))
            m.add(Field(s, "Type", e + 4, 1, .state))
            m.add(Field(s, "StartLBA", e + 8, 4, .offset, unit: 512))
            m.add(Field(s, "SectorCount", e + 12, 4, .size, unit: 512))
            let start = Int(b.value(at: e + 8, width: 4, endian: .little)) * 512
            if start > 0, start < b.count { m.boundaries.append(start) }
        }
        m.structure(0..<512)
        return m
    }

    public func readInProcess(path: String) throws {
        let f = try RawFile(path: path)
        _ = try MBR.parse(try f.read(at: 0, count: Int(min(f.size, 512))))
        _ = try PartitionTable.read(from: f)
    }
}

/// GPT: protective MBR, header and entry array at LBA 1–2, their backups at the end; CRC-32 of
/// the array (in the header) and of the header.
public struct GPTFuzzFormat: FuzzFormat {
    public let name = "gpt"
    public let fileExtension = "img"
    public init() {}

    public func seeds(count: Int, random: inout FuzzRandom) throws(FuzzError) -> [Seed] {
        (0..<count).map { i in
            let ss = i % 4 == 3 ? 4096 : 512
            let entries = [128, 128, 4, 16][i % 4]
            let arraySectors = (entries * 128 + ss - 1) / ss
            let firstUsable = 2 + arraySectors
            let used = 1 + i % 3
            var parts: [(UInt64, UInt64)] = []
            var lba = UInt64(firstUsable + random.below(8))
            for _ in 0..<used {
                let len = UInt64(4 + random.below(60))
                parts.append((lba, lba + len - 1)); lba += len + UInt64(random.below(3))
            }
            let lastUsable = lba + UInt64(random.below(4))
            let total = Int(lastUsable) + 1 + arraySectors + 1
            var d = [UInt8](repeating: 0, count: total * ss)
            d.replaceSubrange(0..<512, with: MBR(partitions: [MBR.Partition(type: 0xEE, startLBA: 1, sectorCount: UInt32(total - 1)), nil, nil, nil]).encode())
            var array = [UInt8](repeating: 0, count: entries * 128)
            for (k, p) in parts.enumerated() {
                let o = 128 * k
                array.replaceSubrange(o..<o + 16, with: GUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")!.bytes)
                array.replaceSubrange(o + 16..<o + 32, with: random.bytes(16))
                array.putLE64(p.0, at: o + 32); array.putLE64(p.1, at: o + 40)
                for (j, u) in "part\(k)".utf16.enumerated() { array.putLE16(u, at: o + 56 + 2 * j) }
            }
            let diskGUID = random.bytes(16)
            func header(my: Int, alt: Int, entriesLBA: Int) -> [UInt8] {
                var h = [UInt8](repeating: 0, count: 92)
                h.put(GPT.signature, at: 0); h.putLE32(0x10000, at: 8); h.putLE32(92, at: 12)
                h.putLE64(UInt64(my), at: 24); h.putLE64(UInt64(alt), at: 32)
                h.putLE64(UInt64(firstUsable), at: 40); h.putLE64(lastUsable, at: 48)
                h.put(diskGUID, at: 56); h.putLE64(UInt64(entriesLBA), at: 72)
                h.putLE32(UInt32(entries), at: 80); h.putLE32(128, at: 84); h.putLE32(CRC32.checksum(array), at: 88)
                h.putLE32(CRC32.checksum(h), at: 16)
                return h
            }
            let backupArray = Int(lastUsable) + 1
            d.put(header(my: 1, alt: total - 1, entriesLBA: 2), at: ss)
            d.put(array, at: 2 * ss)
            d.put(array, at: backupArray * ss)
            d.put(header(my: total - 1, alt: 1, entriesLBA: backupArray), at: (total - 1) * ss)
            return Seed(name: "gpt-ss\(ss)-\(entries)e-\(used)p", bytes: d)
        }
    }

    public func map(_ b: [UInt8]) -> StructureMap {
        var m = StructureMap()
        m.add(Field("protective MBR", "Type", 446 + 4, 1, .state))
        m.add(Field("protective MBR", "SectorCount", 446 + 12, 4, .size, unit: 512))
        let ss = b.count >= 4096 + 8 && Array(b[4096..<4104]) == GPT.signature ? 4096 : 512
        var headers = [(ss, "header")]
        if b.count >= 2 * ss { headers.append((b.count / ss * ss - ss, "backup header")) }
        for (h, s) in headers where h + 92 <= b.count {
            m.add(Field(s, "Signature", h, 8, .signature))
            m.add(Field(s, "Revision", h + 8, 4, .version))
            m.add(Field(s, "HeaderSize", h + 12, 4, .size))
            m.add(Field(s, "MyLBA", h + 24, 8, .offset, unit: UInt64(ss)))
            m.add(Field(s, "AlternateLBA", h + 32, 8, .offset, unit: UInt64(ss)))
            m.add(Field(s, "FirstUsableLBA", h + 40, 8, .offset, unit: UInt64(ss)))
            m.add(Field(s, "LastUsableLBA", h + 48, 8, .offset, unit: UInt64(ss)))
            m.add(Field(s, "DiskGUID", h + 56, 16, .guid))
            m.add(Field(s, "PartitionEntryLBA", h + 72, 8, .offset, unit: UInt64(ss)))
            m.add(Field(s, "NumberOfPartitionEntries", h + 80, 4, .count))
            m.add(Field(s, "SizeOfPartitionEntry", h + 84, 4, .size))
            let arr = bounded(b.value(at: h + 72, width: 8, endian: .little) &* UInt64(ss))
            let n = Int(b.value(at: h + 80, width: 4, endian: .little)), es = Int(b.value(at: h + 84, width: 4, endian: .little))
            if arr > 0, n > 0, n <= 4096, es >= 128, es <= 4096, arr + n * es <= b.count {
                for i in 0..<min(n, 4) where b.value(at: arr + i * es, width: 8, endian: .little) != 0 || i == 0 {
                    let e = arr + i * es, es2 = "\(s) entry \(i)"
                    m.add(Field(es2, "PartitionTypeGUID", e, 16, .guid))
                    m.add(Field(es2, "UniquePartitionGUID", e + 16, 16, .guid))
                    m.add(Field(es2, "StartingLBA", e + 32, 8, .offset, unit: UInt64(ss)))
                    m.add(Field(es2, "EndingLBA", e + 40, 8, .offset, unit: UInt64(ss)))
                    m.add(Field(es2, "Attributes", e + 48, 8, .flags))
                }
                m.checksums.append(ChecksumSpec("\(s) entry array", .crc32, covered: arr..<arr + n * es, field: h + 88))
                m.structure(arr..<arr + n * es)
            }
            let hs = Int(b.value(at: h + 12, width: 4, endian: .little))
            m.checksums.append(ChecksumSpec(s, .crc32, covered: h..<h + (hs >= 92 && hs <= ss ? hs : 92), field: h + 16))
            m.structure(h..<h + ss)
        }
        return m
    }

    public func readInProcess(path: String) throws {
        let f = try RawFile(path: path)
        // 4096-byte sectors when the header is at 4096 (PartitionTable reads 512-byte disks).
        let big = f.size >= 8192 && (try? f.read(at: 4096, count: 8)) == GPT.signature
        _ = try GPT.read(from: f, sectorSize: big ? 4096 : 512)
        if !big { _ = try PartitionTable.read(from: f) }
    }
}
