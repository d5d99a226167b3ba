import Testing
import Foundation
import Processes
import BlockCore
import DiskFormats
@testable import BackupImage

@Suite struct RoundTripTests {
    enum Shape: String, CaseIterable { case disk, volume, partition, gptPartition }

    /// A 4 MiB disk with an MBR (or GPT) and a partition of odd length, or a bare volume.
    static func source(_ shape: Shape, dir: String) throws -> (path: String, expected: [UInt8], partition: Int?) {
        var content = makeContent(size: 4 << 20, seed: 42)
        switch shape {
        case .volume:
            let v = Array(content[0..<(3 << 20) + 12345])
            try writeFile(dir + "/vol.raw", v)
            return (dir + "/vol.raw", v, nil)
        case .disk, .partition:
            let mbr = MBR(diskSignature: 0xA1B2C3D4, partitions: [.init(type: 0x83, bootable: true, startLBA: 2048, sectorCount: 5000)])
            content.replaceSubrange(0..<512, with: mbr.encode())
            try writeFile(dir + "/disk.raw", content)
            if shape == .disk { return (dir + "/disk.raw", content, nil) }
            return (dir + "/disk.raw", Array(content[(2048 * 512)..<(7048 * 512)]), 1)
        case .gptPartition:
            try writeFile(dir + "/gpt.raw", content)
            try Command(["/usr/sbin/sfdisk", "-q", dir + "/gpt.raw"], input: .bytes(Array("label: gpt\nstart=2048, size=3000\nstart=6144, size=1000\n".utf8))).run()
            let disk = try readFile(dir + "/gpt.raw")
            return (dir + "/gpt.raw", Array(disk[(6144 * 512)..<(7144 * 512)]), 2)
        }
    }

    @Test(arguments: Shape.allCases, [UInt32(64 << 10), 1 << 20])
    func matrix(shape: Shape, blockSize: UInt32) throws {
        let dir = try scratchDirectory()
        let (src, expected, partition) = try Self.source(shape, dir: dir)
        for compression in [BlockCodec.zstd, .none] {
            for encrypt in [false, true] {
                let out = "\(dir)/\(compression)-\(encrypt).bli"
                var o = options(blockSize: blockSize, compression: compression, encrypt: encrypt)
                o.partition = partition
                _ = try BackupImageWriter.create(sourcePath: src, outputPath: out, options: o)
                let r = try BackupImageReader.open(path: out, passphrase: testPassphrase)
                #expect(r.size == UInt64(expected.count))
                #expect(try r.read(at: 0, count: expected.count) == expected, "\(shape) \(compression) \(encrypt)")
                #expect(try checkRandomReads(r, expected, count: 40, seed: UInt64(blockSize)))
                try BackupRestore.restore(r, to: out + ".raw")
                #expect(try readFile(out + ".raw") == expected)
                #expect(BackupImageReader.verify(path: out, passphrase: testPassphrase).isClean)
                switch shape {
                case .disk:
                    #expect(r.header.sourceKind == .disk && r.header.partitionScheme == .mbr && r.header.mbrDiskSignature == 0xA1B2C3D4)
                case .partition:
                    #expect(r.header.sourceKind == .volume && r.header.partitionNumber == 1 && r.header.partitionStartLBA == 2048)
                    #expect(r.header.mbrPartitionType == 0x83 && r.header.bootable && r.header.mbrDiskSignature == 0xA1B2C3D4)
                    #expect(r.header.partitionSizeBytes == 5000 * 512 && r.header.originalDiskSize == 4 << 20)
                case .gptPartition:
                    #expect(r.header.partitionScheme == .gpt && r.header.partitionStartLBA == 6144 && !r.header.gptDiskGUID.isZero)
                    #expect(r.header.gptPartitionType == GUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4"))
                case .volume:
                    #expect(r.header.sourceKind == .volume && r.header.partitionNumber == 0)
                }
            }
        }
    }

    @Test(arguments: [1, 511, 65_535, 65_537, 3 * 65_536 + 1])
    func oddSizes(size: Int) throws {
        let dir = try scratchDirectory()
        var rng = TestRNG(UInt64(size))
        let bytes = rng.bytes(size)
        try writeFile(dir + "/s.raw", bytes)
        for encrypt in [false, true] {
            let out = dir + "/s\(encrypt).bli"
            _ = try BackupImageWriter.create(sourcePath: dir + "/s.raw", outputPath: out, options: options(encrypt: encrypt))
            let r = try BackupImageReader.open(path: out, passphrase: testPassphrase)
            #expect(try r.read(at: 0, count: size) == bytes)
            try BackupRestore.restore(r, to: out + ".raw")
            #expect(try readFile(out + ".raw") == bytes)
            #expect(throws: BlockSourceError.self) { try r.read(at: UInt64(size), count: 1) }
        }
    }

    @Test func zeroBlocksAreMarkersAndExtents() throws {
        let dir = try scratchDirectory()
        var bytes = [UInt8](repeating: 0, count: 8 << 16)
        var rng = TestRNG(5)
        bytes.replaceSubrange((2 << 16)..<(3 << 16), with: rng.bytes(1 << 16))
        try writeFile(dir + "/z.raw", bytes)
        let s = try BackupImageWriter.create(sourcePath: dir + "/z.raw", outputPath: dir + "/z.bli", options: options())
        #expect(s.zeroBlocks == 7 && s.localBlocks == 1)
        let r = try BackupImageReader.open(path: dir + "/z.bli")
        #expect(try r.allExtents() == [Extent(offset: 0, length: 2 << 16, kind: .zero), Extent(offset: 2 << 16, length: 1 << 16, kind: .data),
                                       Extent(offset: 3 << 16, length: 5 << 16, kind: .zero)])
        #expect(try r.extents(in: 100..<200) == [Extent(offset: 100, length: 100, kind: .zero)])
    }

    @Test func deterministicWithImageID() throws {
        let dir = try scratchDirectory()
        try writeFile(dir + "/d.raw", makeContent(size: 1 << 20, seed: 9))
        for encrypt in [false, true] {
            let a = dir + "/a\(encrypt).bli", b = dir + "/b\(encrypt).bli", c = dir + "/c\(encrypt).bli"
            _ = try BackupImageWriter.create(sourcePath: dir + "/d.raw", outputPath: a, options: options(encrypt: encrypt, seed: "s"))
            _ = try BackupImageWriter.create(sourcePath: dir + "/d.raw", outputPath: b, options: options(encrypt: encrypt, seed: "s"))
            _ = try BackupImageWriter.create(sourcePath: dir + "/d.raw", outputPath: c, options: options(encrypt: encrypt))
            #expect(try readFile(a) == readFile(b))
            #expect(try readFile(a) != readFile(c))  // random ID (and salt) without a seed
        }
    }

    @Test func refusesToOverwrite() throws {
        let dir = try scratchDirectory()
        try writeFile(dir + "/d.raw", makeContent(size: 200_000, seed: 1))
        #expect(throws: BackupImageError.outputExists(dir + "/d.raw")) {
            try BackupImageWriter.create(sourcePath: dir + "/d.raw", outputPath: dir + "/d.raw", options: options())
        }
        #expect(try readFile(dir + "/d.raw") == makeContent(size: 200_000, seed: 1))
    }
}
