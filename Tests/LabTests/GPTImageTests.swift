import BlockCore
import DiskFormats
import Foundation
import Testing
import TestSupport
@testable import Lab

private let missing: String? = getuid() != 0 ? "not root (4096-byte-sector disks need loop devices)" : toolsMissing(["sgdisk", "losetup"])

/// The lab's GPT oracle (sgdisk, not the product's writer) makes the tables it describes: the
/// product's reader — code the oracle shares nothing with — reads back every field, with 512-
/// and 4096-byte sectors, and the volume lands at its partition's first LBA.
@Suite(.serialized) struct GPTImageTests {
    @Test(.requires(missing: missing), arguments: [512, 4096]) func sgdiskMadeTableReadsBack(ss: Int) throws {
        let s = Scratch("lab-gpt-\(ss)")
        let mib = UInt64(1 << 20) / UInt64(ss)
        let image = GPTImage(sectorSize: ss, diskGUID: "5D6C7B8A-9F0E-4D1C-8B2A-3F4E5D6C7B8A", partitions: [
            .init(number: 1, firstLBA: mib, lastLBA: 3 * mib - 1, type: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
                  uniqueGUID: "0A1B2C3D-4E5F-4061-8273-8495A6B7C8D9", name: "EFI system", attributeBits: [0]),
            .init(number: 2, firstLBA: 3 * mib, lastLBA: 7 * mib - 1, type: "8300",
                  uniqueGUID: "1A2B3C4D-5E6F-4071-8293-A4B5C6D7E8F9", name: "root", attributeBits: [2, 60]),
        ])
        let volume = s.file("vol.raw")
        var bytes = [UInt8](repeating: 0, count: 4 << 20)
        for i in stride(from: 0, to: bytes.count, by: 4096) { bytes[i] = UInt8(truncatingIfNeeded: i >> 12) | 1 }
        try RawFile.create(path: volume, size: 0).write(at: 0, bytes)
        let disk = s.file("disk.raw")
        try image.writeDisk(to: disk, size: 16 << 20, volume: volume, intoPartition: 2)

        let g = try GPT.read(from: RawFile(path: disk), sectorSize: ss)
        #expect(g.diskGUID == GUID("5D6C7B8A-9F0E-4D1C-8B2A-3F4E5D6C7B8A") && g.diskSectors == (16 << 20) / UInt64(ss))
        #expect(g.backupProblem == nil && !g.usedBackupHeader)
        #expect(g.partitions.map(\.number) == [1, 2])
        #expect(g.partitions[0].typeGUID == GPTPartitionType.efiSystem && g.partitions[0].attributes == 1 && g.partitions[0].name == "EFI system")
        #expect(g.partitions[1].typeGUID == GPTPartitionType.linuxFileSystem && g.partitions[1].attributes == 0x1000_0000_0000_0004)
        #expect(g.partitions[1].firstLBA == 3 * mib && g.partitions[1].lastLBA == 7 * mib - 1 && g.partitions[1].name == "root")
        #expect(g.partitions[1].uniqueGUID == GUID("1A2B3C4D-5E6F-4071-8293-A4B5C6D7E8F9"))
        #expect(try RawFile(path: disk).read(at: 3 * mib * UInt64(ss), count: bytes.count) == bytes)
    }
}
