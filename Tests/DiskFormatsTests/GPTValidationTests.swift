import BlockCore
import Foundation
import Testing
@testable import DiskFormats

/// Damaged GPTs get typed errors (`GPTError.kind`) naming the structure and offset, or — where
/// UEFI §5.3.2 says so — the intact copy is used. Damage is made by editing bytes of a valid disk
/// and, where the test needs the CRCs to stay valid, resealing them with code written here (not
/// the writer's encoder).
@Suite struct GPTValidationTests {
    /// A 512- or 4096-byte-sector sample disk as bytes.
    static func bytes(_ ss: Int = 512) throws -> [UInt8] {
        let g = try GPTWriteTests.sample(ss)
        return try GPTWriteTests.disk(g).read(at: 0, count: Int(g.diskBytes))
    }

    /// Recomputes the entry-array CRC and then the header CRC of the header at `lba`.
    static func reseal(_ b: inout [UInt8], lba: Int, ss: Int = 512) {
        let h = lba * ss
        let arrayAt = Int(b.le64(h + 72)) * ss
        let n = Int(b.le32(h + 80)), size = Int(b.le32(h + 84))
        if n * size <= 4 << 20, arrayAt + n * size <= b.count { b.putLE32(CRC32.checksum(Array(b[arrayAt..<arrayAt + n * size])), at: h + 88) }
        b.putLE32(0, at: h + 16)
        b.putLE32(CRC32.checksum(Array(b[h..<h + 92])), at: h + 16)
    }

    static func lastLBA(_ b: [UInt8], _ ss: Int = 512) -> Int { b.count / ss - 1 }

    /// The kind of error reading `b` throws (nil if it reads).
    static func kind(_ b: [UInt8], ss: Int = 512) -> GPTError? {
        do { _ = try GPT.read(from: MemorySource(b), sectorSize: ss); return nil } catch let e as GPTError { return e } catch {
            Issue.record("untyped error \(error)")
            return nil
        }
    }

    @Test func headerCRCFlip() throws {
        var b = try Self.bytes()
        b[512 + 60] ^= 0x01  // a DiskGUID byte, CRC not updated
        // The primary is damaged: the backup takes over (§5.3.2).
        let g = try GPT.read(from: MemorySource(b), sectorSize: 512)
        #expect(g.usedBackupHeader && g.diskGUID == GPTWriteTests.diskGUID && g.partitions.count == 2)
        // Both damaged: the primary's typed error, at the CRC field.
        b[Self.lastLBA(b) * 512 + 60] ^= 0x01
        let e = try #require(Self.kind(b))
        #expect(e.kind == .headerCRC && e.structure == "header" && e.offset == 512 + 16)
        #expect(e.description.hasPrefix("GPT: header at 0x210: header CRC-32 mismatch"))
    }

    @Test func entryArrayCRCFlip() throws {
        var b = try Self.bytes()
        b[1024 + 128 * 2 + 20] ^= 0x80  // entry 3's unique GUID in the primary array
        let g = try GPT.read(from: MemorySource(b), sectorSize: 512)
        #expect(g.usedBackupHeader && g.partition(number: 3)?.uniqueGUID == GPTWriteTests.rootGUID)
        let backupArray = (Self.lastLBA(b) - 32) * 512
        b[backupArray + 128 * 2 + 20] ^= 0x80
        let e = try #require(Self.kind(b))
        #expect(e.kind == .entryArrayCRC && e.offset == 1024)
    }

    @Test func damagedBackupIsReportedNotFatal() throws {
        var b = try Self.bytes()
        b[Self.lastLBA(b) * 512 + 60] ^= 0x01
        let g = try GPT.read(from: MemorySource(b), sectorSize: 512)
        #expect(!g.usedBackupHeader && g.backupProblem?.kind == .headerCRC && g.backupProblem?.structure == "backup header")
    }

    @Test(arguments: [512, 4096]) func overlappingPartitions(ss: Int) throws {
        var b = try Self.bytes(ss)
        let last = Self.lastLBA(b, ss)
        let arrays = [2 * ss, Int(b.le64(last * ss + 72)) * ss]
        for a in arrays {
            let firstOf1 = b.le64(a + 32)
            b.putLE64(b.le64(a + 40) , at: a + 256 + 32)  // entry 3 starts on entry 1's last LBA
            #expect(firstOf1 < b.le64(a + 40))
        }
        Self.reseal(&b, lba: 1, ss: ss)
        Self.reseal(&b, lba: last, ss: ss)
        let e = try #require(Self.kind(b, ss: ss))
        #expect(e.kind == .overlappingPartitions && e.structure == "partition entry 3" && e.offset == UInt64(2 * ss + 256 + 32))
    }

    @Test func partitionOutsideUsableRange() throws {
        var b = try Self.bytes()
        let last = Self.lastLBA(b)
        let lastUsable = b.le64(512 + 48)
        for a in [1024, (last - 32) * 512] { b.putLE64(lastUsable + 1, at: a + 256 + 40) }
        Self.reseal(&b, lba: 1)
        Self.reseal(&b, lba: last)
        #expect(Self.kind(b)?.kind == .partitionOutsideUsable)
        // And StartingLBA past EndingLBA.
        for a in [1024, (last - 32) * 512] { b.putLE64(b.le64(a + 256 + 32) - 1, at: a + 256 + 40) }
        Self.reseal(&b, lba: 1)
        Self.reseal(&b, lba: last)
        #expect(Self.kind(b)?.kind == .partitionRange)
    }

    /// Entry size and count out of bounds are refused before the array is read or allocated.
    @Test(arguments: [(UInt32(128), UInt32(1_000_000), GPTError.Kind.entryCount), (128, UInt32.max, .entryCount),
                      (192, 128, .entrySize), (64, 128, .entrySize), (8192, 4, .entrySize), (0, 0, .entrySize)])
    func entryShapeOutOfBounds(size: UInt32, count: UInt32, expected: GPTError.Kind) throws {
        var b = try Self.bytes()
        let last = Self.lastLBA(b)
        for h in [512, last * 512] {
            b.putLE32(count, at: h + 80)
            b.putLE32(size, at: h + 84)
            b.putLE32(0, at: h + 16)
            b.putLE32(CRC32.checksum(Array(b[h..<h + 92])), at: h + 16)
        }
        let e = try #require(Self.kind(b))
        #expect(e.kind == expected && e.offset == 512 + (expected == .entryCount ? 80 : 84), "\(e)")
    }

    @Test func backupHeaderMismatch() throws {
        var b = try Self.bytes()
        let last = Self.lastLBA(b)
        b[last * 512 + 56] ^= 0xFF  // backup DiskGUID
        Self.reseal(&b, lba: last)
        let e = try #require(Self.kind(b))
        #expect(e.kind == .backupMismatch && e.offset == UInt64(last * 512 + 56))
        // Different usable range in the backup.
        var c = try Self.bytes()
        c.putLE64(c.le64(last * 512 + 48) - 1, at: last * 512 + 48)
        Self.reseal(&c, lba: last)
        #expect(Self.kind(c)?.kind == .backupMismatch)
        // Different partitions (consistent backup array, different from the primary's).
        var d = try Self.bytes()
        d[(last - 32) * 512 + 128 * 2 + 56] = UInt8(ascii: "R")
        Self.reseal(&d, lba: last)
        #expect(Self.kind(d)?.kind == .backupMismatch)
    }

    @Test func headerFieldRules() throws {
        func damaged(_ change: (inout [UInt8]) -> Void) throws -> GPTError.Kind? {
            var b = try Self.bytes()
            let last = Self.lastLBA(b)
            change(&b)
            Self.reseal(&b, lba: 1)
            Self.reseal(&b, lba: last)
            return Self.kind(b)?.kind
        }
        let last = Self.lastLBA(try Self.bytes())
        #expect(try damaged { $0[512] = UInt8(ascii: "X"); $0[last * 512] = UInt8(ascii: "X") } == .signature)
        #expect(try damaged { $0.putLE32(0x0002_0000, at: 512 + 8); $0.putLE32(0x0002_0000, at: last * 512 + 8) } == .revision)
        #expect(try damaged { $0.putLE32(600, at: 512 + 12); $0.putLE32(600, at: last * 512 + 12) } == .headerSize)
        #expect(try damaged { $0.putLE32(1, at: 512 + 20); $0.putLE32(1, at: last * 512 + 20) } == .reserved)
        #expect(try damaged { $0.putLE64(5, at: 512 + 24); $0.putLE64(5, at: last * 512 + 24) } == .headerLocation)
        #expect(try damaged { $0.putLE64(1, at: 512 + 72); $0.putLE64(1, at: last * 512 + 72) } == .entryArrayLocation)
        #expect(try damaged { $0.putLE64(20, at: 512 + 40); $0.putLE64(20, at: last * 512 + 40) } == .entryArrayLocation)
        #expect(try damaged { b in for h in [512, last * 512] { b.putLE64(b.le64(h + 48) + 1, at: h + 40) } } == .usableRange)
        // A primary whose AlternateLBA is not the last LBA: the table reads, the backup is reported.
        var b = try Self.bytes()
        b.putLE64(UInt64(last - 1), at: 512 + 32)
        Self.reseal(&b, lba: 1)
        let g = try GPT.read(from: MemorySource(b), sectorSize: 512)
        #expect(g.backupProblem?.kind == .headerLocation)
    }

    @Test func protectiveMBRRequired() throws {
        var b = try Self.bytes()
        b[0x1BE + 4] = 0x83
        let e = try #require(Self.kind(b))
        #expect(e.kind == .protectiveMBR && e.structure == "protective MBR")
        var c = try Self.bytes()
        c[510] = 0
        #expect(Self.kind(c)?.kind == .protectiveMBR)
        #expect(throws: GPTError.self) { try GPT.read(from: MemorySource([UInt8](repeating: 0, count: 2048)), sectorSize: 512) }
    }
}
