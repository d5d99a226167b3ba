import Testing
import Foundation
import Processes
import BlockCore
@testable import DiskFormats

/// Runs a tool and returns stdout; fails the test when it exits non-zero.
@discardableResult
func runTool(_ path: String, _ args: [String], stdin: String? = nil) throws -> String {
    try Command([path] + args, input: stdin.map { .bytes(Array($0.utf8)) } ?? .null).run().stdoutText
}

func tempFile(_ name: String, size: UInt64) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-part-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let path = dir.appendingPathComponent(name).path
    _ = try RawFile.create(path: path, size: size)
    return path
}

@Suite struct MBRTests {
    @Test func encodeParseRoundTrip() throws {
        let code = (0..<440).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let m = MBR(bootCode: code, diskSignature: 0xDEADBEEF, partitions: [
            .init(type: 0x0C, bootable: true, startLBA: 2048, sectorCount: 100_000),
            nil,
            .init(type: 0x83, startLBA: 200_000, sectorCount: 20_000_000),
        ])
        let bytes = m.encode()
        #expect(bytes.count == 512 && bytes[510] == 0x55 && bytes[511] == 0xAA)
        #expect(bytes.le32(0x1B8) == 0xDEADBEEF)
        #expect(Array(bytes[0..<440]) == code)
        let back = try MBR.parse(bytes)
        #expect(back == m)
        // CHS: LBA 2048 = C0 H32 S33 under 255/63; past 8 GiB saturates to FE FF FF.
        #expect(Array(bytes[0x1BF..<0x1C2]) == [32, 33, 0])
        #expect(MBR.chsBytes(forLBA: 20_200_000) == [0xFE, 0xFF, 0xFF])
    }

    @Test func rejectsBadInput() {
        var s = MBR(partitions: [.init(type: 7, startLBA: 63, sectorCount: 10)]).encode()
        s[511] = 0
        #expect(throws: FormatError.self) { try MBR.parse(s) }
        var t = MBR(partitions: [.init(type: 7, startLBA: 63, sectorCount: 10)]).encode()
        t[0x1BE] = 0x12
        #expect(throws: FormatError.self) { try MBR.parse(t) }
        #expect(throws: FormatError.self) { try MBR.parse([0x55, 0xAA]) }
    }

    /// Slot numbers, the gap before the first partition, and the refusals GRUB boot-code
    /// regeneration relied on (formerly Reconfigure's own MBRSector; same assertions).
    @Test func slotNumbersAndFirstPartition() throws {
        var s = [UInt8](repeating: 0, count: 512)
        s[510] = 0x55
        s[511] = 0xAA
        #expect(try MBR.parse(s).numberedPartitions.isEmpty)
        #expect(try MBR.parse(s).firstPartitionLBA == nil)
        s[0x1BE + 16] = 0x80
        s[0x1BE + 16 + 4] = 0x83
        s.putLE32(63, at: 0x1BE + 16 + 8)
        s.putLE32(1000, at: 0x1BE + 16 + 12)
        let m = try MBR.parse(s)
        #expect(m.numberedPartitions.map(\.number) == [2])
        #expect(m.numberedPartitions.map(\.partition) == [MBR.Partition(type: 0x83, bootable: true, startLBA: 63, sectorCount: 1000)])
        #expect(m.partition(startingAt: 63)?.number == 2)
        #expect(m.partition(startingAt: 2048) == nil)
        #expect(m.firstPartitionLBA == 63)
        s[0x1BE + 16] = 0x7F
        #expect(throws: FormatError.self) { try MBR.parse(s) }
        #expect(throws: FormatError.self) { try MBR.parse(Array(s.prefix(100))) }
    }

    /// Rule: the boot indicator is checked in all four slots, empty ones included (what Linux's
    /// and GRUB's msdos parsers do to tell a table from a FAT/NTFS boot sector).
    @Test func bootIndicatorCheckedInEmptySlots() throws {
        var s = MBR(partitions: [.init(type: 0x83, startLBA: 2048, sectorCount: 100)]).encode()
        s[0x1BE + 48] = 0x12  // slot 4: type 0, no sectors, but a bad boot indicator
        #expect(throws: FormatError("MBR", "partition entry 4", at: 0x1BE + 48, "boot indicator 0x12 is neither 0x00 nor 0x80")) {
            try MBR.parse(s)
        }
        s[0x1BE + 48] = 0x00
        #expect(try MBR.parse(s).numberedPartitions.count == 1)
    }

    /// Rule: a used entry may not start at LBA 0 (the MBR itself); an unused slot's start is
    /// never looked at. Through `PartitionTable` too, the path backups and exposure take.
    @Test func usedEntryAtLBA0Refused() throws {
        var s = MBR(partitions: [.init(type: 0x83, startLBA: 2048, sectorCount: 100)]).encode()
        s.putLE32(0, at: 0x1BE + 8)
        let expected = FormatError("MBR", "partition entry 1", at: 0x1BE + 8, "starts at LBA 0, over the MBR itself")
        #expect(throws: expected) { try MBR.parse(s) }
        #expect(throws: expected) { try PartitionTable.read(from: MemorySource(s + [UInt8](repeating: 0, count: 1 << 20))) }
        s[0x1BE + 4] = 0  // type 0: an unused slot, start 0 or not
        #expect(try MBR.parse(s).numberedPartitions.isEmpty)
    }

    /// Cross-check with util-linux: sfdisk reads our encoded MBR, and we read sfdisk's.
    @Test func agreesWithSfdisk() throws {
        let path = try tempFile("mbr.raw", size: 64 << 20)
        let ours = MBR(diskSignature: 0x12345678, partitions: [
            .init(type: 0x0C, bootable: true, startLBA: 2048, sectorCount: 40_000),
            .init(type: 0x83, startLBA: 43_008, sectorCount: 40_000),
        ])
        try RawFile(path: path, writable: true).write(at: 0, ours.encode())
        let dump = try runTool("/usr/sbin/sfdisk", ["--dump", path])
        #expect(dump.contains("label-id: 0x12345678"))
        #expect(dump.contains("start=        2048, size=       40000, type=c, bootable"))
        #expect(dump.contains("start=       43008, size=       40000, type=83"))

        let path2 = try tempFile("mbr2.raw", size: 64 << 20)
        _ = try runTool("/usr/sbin/sfdisk", ["-q", path2], stdin: "label: dos\nlabel-id: 0xcafef00d\nstart=4096, size=8192, type=7, bootable\nstart=16384, type=83\n")
        let t = try PartitionTable.read(from: RawFile(path: path2))
        #expect(t.scheme == .mbr && t.diskSignature == 0xCAFEF00D)
        #expect(t.entries.map(\.startLBA) == [4096, 16384])
        #expect(t.entries[0].sectorCount == 8192 && t.entries[0].bootable && t.entries[0].mbrType == 7)
        #expect(t.entries[1].sectorCount == (64 << 20) / 512 - 16384)
    }
}

@Suite struct GPTTests {
    @Test func readsSfdiskGPT() throws {
        let path = try tempFile("gpt.raw", size: 32 << 20)
        _ = try runTool("/usr/sbin/sfdisk", ["-q", path], stdin: """
            label: gpt
            label-id: 0C8F4B2E-1D35-4A4B-9A0B-3E2F5C6D7E8F
            start=2048, size=8192, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=11111111-2222-4333-8444-555555555555, name="EFI"
            start=10240, size=20480, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4

            """)
        let t = try PartitionTable.read(from: RawFile(path: path))
        #expect(t.scheme == .gpt)
        #expect(t.diskGUID == GUID("0C8F4B2E-1D35-4A4B-9A0B-3E2F5C6D7E8F"))
        #expect(t.entries.count == 2)
        #expect(t.entries[0].startLBA == 2048 && t.entries[0].sectorCount == 8192)
        #expect(t.entries[0].gptType == GUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"))
        #expect(t.entries[0].gptUniqueGUID == GUID("11111111-2222-4333-8444-555555555555"))
        #expect(t.gpt?.partitions[0].name == "EFI")
        #expect(t.entries[1].number == 2 && t.entries[1].startLBA == 10240 && t.entries[1].sectorCount == 20480)

        // Damage the primary header: the backup header at the last LBA takes over.
        let f = try RawFile(path: path, writable: true)
        try f.write(at: 512 + 100, [0xFF])
        try f.write(at: 512 + 24, [0x77])
        let t2 = try PartitionTable.read(from: f)
        #expect(t2.gpt?.usedBackupHeader == true && t2.entries == t.entries)
        // Damage both: a typed error.
        try f.write(at: (32 << 20) - 512 + 24, [0x77])
        #expect(throws: GPTError.self) { try PartitionTable.read(from: f) }
    }

    @Test func crc32CheckValue() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
    }

    @Test func sliceReadsThePartition() throws {
        let bytes = (0..<4096).map { UInt8(truncatingIfNeeded: $0 / 3) }
        let s = try PartitionSlice(MemorySource(bytes), offset: 1024, length: 2048)
        #expect(try s.read(at: 0, count: 2048) == Array(bytes[1024..<3072]))
        #expect(throws: BlockSourceError.self) { try s.read(at: 2047, count: 2) }
        #expect(throws: BlockSourceError.self) { try PartitionSlice(MemorySource(bytes), offset: 4000, length: 200) }
    }
}
