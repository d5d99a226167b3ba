import BlockCore
import BackupImage

/// BootLab's backup image (.bli, docs/formats/backup-image.md): header CRC-32C, index entries each
/// with a CRC-32C, the index digest (SHA-256) in the header, the trailer's header digest and CRC.
public struct BLIFuzzFormat: FuzzFormat {
    public let name = "bli"
    public let fileExtension = "bli"
    public init() {}

    public func seeds(count: Int, random: inout FuzzRandom) throws(FuzzError) -> [Seed] {
        let dir = FileSystem.temporaryDirectory(prefix: "bootlab-fuzz-bli")
        defer { FileSystem.removeTree(dir) }
        var out: [Seed] = []
        for i in 0..<count {
            let size = [256 << 10, 1 << 20, 640 << 10][i % 3]
            var o = BackupCreateOptions()
            o.blockSize = [64 << 10, 128 << 10, 256 << 10][random.below(3)]
            o.compression = i % 2 == 0 ? .none : .zstd
            o.imageID = GUID(bytes: random.bytes(16))
            o.threads = 1
            let path = dir + "/seed-\(i).bli"
            do {
                _ = try BackupImageWriter.create(source: FuzzFormats.disk(size: size, pieces: 1 + random.below(4), random: &random),
                                                 outputPath: path, options: o)
                let f = try RawFile(path: path)
                out.append(Seed(name: "bli-\(size)-bs\(o.blockSize! >> 10)K-\(o.compression == .none ? "plain" : "zstd")",
                                bytes: try f.read(at: 0, count: Int(f.size))))
            } catch {
                throw .seed("backup image of \(size) bytes: \(error)")
            }
        }
        return out
    }

    public func map(_ b: [UInt8]) -> StructureMap {
        var m = StructureMap()
        let s = "header"
        m.add(Field(s, "Magic", 0, 8, .signature))
        m.add(Field(s, "MajorVersion", 8, 2, .version))
        m.add(Field(s, "HeaderLength", 12, 4, .size))
        m.add(Field(s, "Flags", 20, 4, .flags))
        m.add(Field(s, "ImageID", 24, 16, .guid))
        m.add(Field(s, "ParentID", 40, 16, .guid))
        m.add(Field(s, "VirtualSize", 88, 8, .size))
        m.add(Field(s, "BlockSize", 96, 4, .size))
        m.add(Field(s, "BlockCount", 100, 4, .count))
        m.add(Field(s, "Codec", 104, 1, .state))
        m.add(Field(s, "SourceKind", 106, 1, .state))
        m.add(Field(s, "PartitionScheme", 107, 1, .state))
        m.add(Field(s, "LogicalSectorSize", 112, 4, .size))
        m.add(Field(s, "PartitionStartLBA", 176, 8, .offset, unit: 512))
        m.add(Field(s, "PartitionSize", 184, 8, .size))
        m.add(Field(s, "OriginalDiskSize", 192, 8, .size))
        m.add(Field(s, "IndexOffset", 208, 8, .offset))
        m.add(Field(s, "IndexLength", 216, 8, .size))
        m.add(Field(s, "VaultID", 256, 16, .guid))
        m.add(Field(s, "KDF", 272, 1, .state))
        m.add(Field(s, "ParentPathLength", 496, 2, .size))
        m.add(Field(s, "VaultPathLength", 498, 2, .size))
        m.structure(0..<4096)
        let io = bounded(b.value(at: 208, width: 8, endian: .little))
        let il = bounded(b.value(at: 216, width: 8, endian: .little))
        if io >= 4096, il >= 0, il <= 1 << 24, io + il <= b.count {
            m.structure(io..<io + il)
            for i in 0..<il / 64 {
                let e = io + 64 * i, es = "index entry \(i)"
                if i < 32 {
                    m.add(Field(es, "Kind", e, 1, .state))
                    m.add(Field(es, "Codec", e + 1, 1, .state))
                    m.add(Field(es, "StoredLength", e + 4, 4, .size))
                    m.add(Field(es, "Offset", e + 8, 8, .offset))
                    let off = bounded(b.value(at: e + 8, width: 8, endian: .little))
                    if off > 4096, off < b.count { m.boundaries.append(off) }
                }
                m.checksums.append(ChecksumSpec(es, .crc32c, covered: e..<e + 60, field: e + 60))
            }
            m.checksums.append(ChecksumSpec("index digest", .sha256, covered: io..<io + il, field: 224, width: 32))
        }
        m.checksums.append(ChecksumSpec("header", .crc32c, covered: 0..<4096, field: 16))
        if b.count >= 4096 + 64 {
            let t = b.count - 64
            m.add(Field("trailer", "Magic", t, 8, .signature))
            m.add(Field("trailer", "ImageID", t + 12, 16, .guid))
            m.add(Field("trailer", "IndexOffset", t + 28, 8, .offset))
            m.add(Field("trailer", "IndexLength", t + 36, 8, .size))
            m.checksums.append(ChecksumSpec("trailer header digest", .sha256, covered: 0..<4096, field: t + 44, width: 16))
            m.checksums.append(ChecksumSpec("trailer", .crc32c, covered: t..<t + 64, field: t + 60))
            m.structure(t..<b.count)
        }
        return m
    }

    public func readInProcess(path: String) throws {
        let r = try BackupImageReader.open(path: path)
        try FuzzFormats.drain(r)
        let v = BackupImageReader.verify(path: path)
        if !v.isClean { throw FuzzError.file(path, reason: "corrupt (\(v.findings.count) findings)") }
    }
}
