import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// A loop device with `sectorSize`-byte logical blocks over `file`, detached by `body`'s end: how
/// sgdisk sees a 4096-byte-sector disk (on a plain file it assumes 512).
func withLoopDevice<T>(_ file: String, sectorSize: Int, _ body: (String) throws -> T) throws -> T {
    if sectorSize == 512 { return try body(file) }
    let r = try run("losetup", ["-b", String(sectorSize), "-f", "--show", file])
    guard r.status == 0 else { throw GPTTestError("losetup -b \(sectorSize) failed: \(r.stderr)") }
    let dev = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    defer { _ = try? run("losetup", ["-d", dev]) }
    return try body(dev)
}

struct GPTTestError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Why the sgdisk cross-checks cannot run here, or nil.
let gptToolsMissing: String? = getuid() != 0 ? "not root (4096-byte-sector checks need loop devices)" : toolsMissing(["sgdisk", "losetup"])

/// GPT writer: round trips through our reader, and the tables checked by GPT fdisk (sgdisk), a
/// tool we did not write: `sgdisk -v` finds no problem, and a table sgdisk makes is byte for byte
/// the one `GPT.standard` encodes.
@Suite(.serialized) struct GPTWriteTests {
    static let diskGUID = GUID("0C8F4B2E-1D35-4A4B-9A0B-3E2F5C6D7E8F")!
    static let espGUID = GUID("11111111-2222-4333-8444-555555555555")!
    static let rootGUID = GUID("66666666-7777-4888-9999-AAAAAAAAAAAA")!

    /// A 64 MiB disk: ESP as entry 1 at 1 MiB (8 MiB, "required" attribute), a Linux file system
    /// as entry 3 after it (legacy-BIOS-bootable + a type-specific bit), entry 2 unused.
    static func sample(_ ss: Int, rootName: String = "root") throws -> GPT {
        let mib = UInt64(1 << 20) / UInt64(ss)
        return try GPT.standard(diskSize: 64 << 20, sectorSize: ss, diskGUID: diskGUID, partitions: [
            .init(number: 1, typeGUID: GPTPartitionType.efiSystem, uniqueGUID: espGUID, firstLBA: mib, lastLBA: 9 * mib - 1,
                  attributes: 1, name: "EFI system"),
            .init(number: 3, typeGUID: GPTPartitionType.linuxFileSystem, uniqueGUID: rootGUID, firstLBA: 9 * mib, lastLBA: 40 * mib - 1,
                  attributes: 0x1000_0000_0000_0004, name: rootName),
        ])
    }

    static func disk(_ g: GPT) -> MemorySource {
        var b = [UInt8](repeating: 0, count: Int(g.diskBytes))
        b.put(g.encodePrimaryArea(), at: Int(g.primaryArea.lowerBound))
        b.put(g.encodeBackupArea(), at: Int(g.backupArea.lowerBound))
        return MemorySource(b)
    }

    @Test(arguments: [512, 4096]) func roundTrip(ss: Int) throws {
        let g = try Self.sample(ss, rootName: "räksmörgås ✓")
        let arrayBlocks = UInt64(16384 / ss)
        #expect(g.firstUsableLBA == 2 + arrayBlocks && g.lastUsableLBA == g.diskSectors - 2 - arrayBlocks)
        let disk = Self.disk(g)
        let back = try GPT.read(from: disk, sectorSize: ss)
        #expect(back == g)
        #expect(back.partitions.map(\.number) == [1, 3])
        #expect(back.partition(number: 3)?.name == "räksmörgås ✓" && back.partition(number: 3)?.legacyBootable == true)
        #expect(back.partition(number: 1)?.required == true && back.partition(number: 1)?.typeName == "EFI System")
        // Re-encoding what was read gives the same bytes.
        #expect(back.encodePrimaryArea() == g.encodePrimaryArea() && back.encodeBackupArea() == g.encodeBackupArea())
        // The generic reader finds the same table with the right sector size.
        let t = try PartitionTable.read(from: disk)
        #expect(t.scheme == .gpt && t.sectorSize == ss && t.entries.map(\.startLBA) == [g.partitions[0].firstLBA, g.partitions[1].firstLBA])
        // Protective MBR: one 0xEE record from LBA 1 over the whole disk (UEFI table 5-4).
        let mbr = try MBR.parse(try disk.read(at: 0, count: 512))
        #expect(mbr.partitions[0] == MBR.Partition(type: 0xEE, startLBA: 1, sectorCount: UInt32(g.diskSectors - 1)))
        #expect(mbr.partitions[1...].allSatisfy { $0 == nil } && mbr.diskSignature == 0)
    }

    @Test func writerRefusesInvalidTables() throws {
        let base = try Self.sample(512)
        func attempt(_ parts: [GPT.Partition], count: Int = 128, size: Int = 128) -> GPTError.Kind? {
            do { _ = try GPT.standard(diskSize: 64 << 20, sectorSize: 512, diskGUID: Self.diskGUID, partitions: parts, entryCount: count, entrySize: size); return nil }
            catch let e as GPTError { return e.kind } catch { return nil }
        }
        var overlap = base.partitions
        overlap[1].firstLBA = overlap[0].lastLBA
        #expect(attempt(overlap) == .overlappingPartitions)
        var outside = base.partitions
        outside[1].lastLBA = base.lastUsableLBA + 1
        #expect(attempt(outside) == .partitionOutsideUsable)
        var early = base.partitions
        early[0].firstLBA = 33
        #expect(attempt(early) == .partitionOutsideUsable)
        #expect(attempt(base.partitions, size: 192) == .entrySize)
        #expect(attempt(base.partitions, count: 40_000) == .entryCount)
        #expect(attempt(base.partitions, count: 2) == .invalidLayout)  // entry 3 does not exist in a 2-entry array
        var long = base.partitions
        long[0].name = String(repeating: "x", count: 37)
        #expect(attempt(long) == .invalidLayout)
    }

    /// Our table, judged by sgdisk: "No problems found", and its reading of every field.
    @Test(.requires(missing: gptToolsMissing), arguments: [512, 4096]) func sgdiskVerifiesOurTable(ss: Int) throws {
        let d = Scratch("gpt-sgdisk-v")
        let g = try Self.sample(ss)
        let path = d.file("ours.raw")
        let f = try RawFile.create(path: path, size: g.diskBytes)
        try g.write(to: f)
        try withLoopDevice(path, sectorSize: ss) { dev in
            let v = try run("sgdisk", ["-v", dev])
            #expect(v.stdout.contains("No problems found"), "sgdisk -v: \(v.stdout) \(v.stderr)")
            #expect(!v.stdout.contains("Problem") && !v.stdout.contains("Warning"), "\(v.stdout)")
            let p = try run("sgdisk", ["-p", dev]).stdout
            #expect(p.contains(ss == 512 ? "Sector size (logical): 512 bytes" : "Sector size (logical/physical): \(ss)/"), "\(p)")
            #expect(p.contains("Disk identifier (GUID): \(Self.diskGUID)"), "\(p)")
            let i1 = try run("sgdisk", ["-i", "1", dev]).stdout
            #expect(i1.contains("Partition GUID code: C12A7328-F81F-11D2-BA4B-00A0C93EC93B"), "\(i1)")
            #expect(i1.contains("Partition unique GUID: \(Self.espGUID)"), "\(i1)")
            #expect(i1.contains("First sector: \(g.partitions[0].firstLBA) ") && i1.contains("Last sector: \(g.partitions[0].lastLBA) "), "\(i1)")
            #expect(i1.contains("Attribute flags: 0000000000000001") && i1.contains("Partition name: 'EFI system'"), "\(i1)")
            let i3 = try run("sgdisk", ["-i", "3", dev]).stdout
            #expect(i3.contains("Partition unique GUID: \(Self.rootGUID)") && i3.contains("Attribute flags: 1000000000000004"), "\(i3)")
            #expect(i3.contains("Partition name: 'root'"), "\(i3)")
        }
    }

    /// sgdisk makes the same table on a zeroed disk: every byte of both table areas is equal, and
    /// our reader reads sgdisk's table as the same value.
    @Test(.requires(missing: gptToolsMissing), arguments: [512, 4096]) func sameBytesAsSgdisk(ss: Int) throws {
        let d = Scratch("gpt-sgdisk-same")
        let g = try Self.sample(ss)
        let path = d.file("sgdisk.raw")
        _ = try RawFile.create(path: path, size: g.diskBytes)
        let (p1, p3) = (g.partitions[0], g.partitions[1])
        try withLoopDevice(path, sectorSize: ss) { dev in
            let r = try run("sgdisk", ["-U", "\(Self.diskGUID)",
                                       "-n", "1:\(p1.firstLBA):\(p1.lastLBA)", "-t", "1:EF00", "-u", "1:\(Self.espGUID)", "-c", "1:EFI system", "-A", "1:set:0",
                                       "-n", "3:\(p3.firstLBA):\(p3.lastLBA)", "-t", "3:8300", "-u", "3:\(Self.rootGUID)", "-c", "3:root",
                                       "-A", "3:set:2", "-A", "3:set:60", dev])
            #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        }
        let f = try RawFile(path: path)
        #expect(try f.read(at: 0, count: Int(g.primaryArea.upperBound)) == g.encodePrimaryArea())
        #expect(try f.read(at: g.backupArea.lowerBound, count: Int(g.backupArea.count)) == g.encodeBackupArea())
        #expect(try GPT.read(from: f, sectorSize: ss) == g)
    }
}

/// `bootlab info` (ImageInfoProbes) shows a raw disk's GPT: every partition with type and type
/// name, GUIDs, start/end, attributes and name, in text and JSON; a damaged GPT shows its error.
@Suite struct PartitionTableInfoTests {
    @Test func rawDiskShowsItsGPT() throws {
        let d = Scratch("gpt-info")
        let g = try GPTWriteTests.sample(4096)
        let path = d.file("disk.raw")
        try g.write(to: try RawFile.create(path: path, size: g.diskBytes))
        let info = try ImageInfoProbes.describe(path: path, probes: [])
        let text = info.text
        for line in ["partition table:", "  scheme: gpt", "  sector size: 4096", "  disk guid: \(GPTWriteTests.diskGUID)",
                     "  first usable lba: 6", "    1:", "      type: C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "      type name: EFI System",
                     "      unique guid: \(GPTWriteTests.espGUID)", "      start lba: 256", "      attributes: 0x1", "      name: EFI system",
                     "    3:", "      type name: Linux filesystem", "      attributes: 0x1000000000000004", "      name: root"] {
            #expect(text.contains(line + "\n") || text.hasSuffix(line), "missing '\(line)' in\n\(text)")
        }
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let json = String(decoding: try enc.encode(info), as: UTF8.self)
        #expect(json.contains(#""partition_table":{"disk_guid":"0C8F4B2E-1D35-4A4B-9A0B-3E2F5C6D7E8F""#), "\(json)")
        #expect(json.contains(#""3":{"attributes":"0x1000000000000004","last_lba":10239,"name":"root","size":32505856,"start_lba":2304,"type":"0FC63DAF-8483-4772-8E79-3D69D8477DE4""#), "\(json)")

        // Both headers damaged: the table is shown with the reader's error, not silently dropped.
        let f = try RawFile(path: path, writable: true)
        try f.write(at: 4096 + 60, [0x55])
        try f.write(at: g.diskBytes - 4096 + 60, [0x55])
        let bad = try ImageInfoProbes.describe(path: path, probes: []).text
        #expect(bad.contains("  scheme: gpt") && bad.contains("header CRC-32 mismatch"), "\(bad)")
    }
}
