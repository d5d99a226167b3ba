import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// Each test corrupts one thing in a clean file and asserts the named finding at its offset.
@Suite struct VHDXCheckTests {
    /// A clean 8 MiB dynamic file (1 MiB blocks) with blocks 0 and 2 allocated.
    func clean(_ d: Scratch) throws -> (path: String, file: VHDXFile) {
        let path = d.file("c.vhdx")
        let f = try VHDXFile.createDynamic(path: path, virtualSize: 8 << 20, blockSize: 1 << 20, seed: [3])
        try pattern(4096, seed: 1).withUnsafeBytes { try f.write(at: 0, from: $0) }
        try pattern(4096, seed: 2).withUnsafeBytes { try f.write(at: 2 << 20, from: $0) }
        try f.flush()
        #expect(try VHDXCheck.run(path: path).findings.isEmpty)
        return (path, f)
    }

    func poke(_ path: String, _ at: UInt64, _ bytes: [UInt8]) throws {
        let r = try RawFile(path: path, writable: true)
        try r.write(at: at, bytes)
        try r.flush()
    }

    func setBAT(_ path: String, _ f: VHDXFile, index: Int, _ entry: UInt64) throws {
        var b: [UInt8] = []
        b.appendLE64(entry)
        try poke(path, f.batOffset + UInt64(index) * 8, b)
    }

    func expectFinding(_ path: String, _ structure: String, _ offset: UInt64, _ text: String,
                       sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try VHDXCheck.run(path: path)
        #expect(r.exitCode == 2, sourceLocation: sourceLocation)
        let hit = r.findings.contains { $0.structure == structure && $0.offset == offset && $0.message.contains(text) && $0.severity == .corruption }
        #expect(hit, "\(r.findings)", sourceLocation: sourceLocation)
    }

    @Test(arguments: [(VHDX.header1Offset, "header 1"), (VHDX.header2Offset, "header 2")])
    func damagedHeaderCopyIsCorruptButReadable(offset: UInt64, name: String) throws {
        let d = Scratch("chk-h")
        let (path, _) = try clean(d)
        try poke(path, offset + 200, [0x5A])
        try expectFinding(path, name, offset + 4, "checksum")
        #expect(try VHDXFile.open(path: path).read(at: 0, count: 4096) == pattern(4096, seed: 1))
    }

    @Test(arguments: [(VHDX.regionTable1Offset, "region table 1"), (VHDX.regionTable2Offset, "region table 2")])
    func damagedRegionTableCopyIsCorruptButReadable(offset: UInt64, name: String) throws {
        let d = Scratch("chk-rt")
        let (path, _) = try clean(d)
        try poke(path, offset + 1000, [0x5A])
        try expectFinding(path, name, offset + 4, "checksum")
        #expect(try VHDXFile.open(path: path).read(at: 2 << 20, count: 4096) == pattern(4096, seed: 2))
    }

    @Test func regionTablesDiffer() throws {
        let d = Scratch("chk-rtd")
        let (path, f) = try clean(d)
        var t = f.regionTable
        t.entries.append(VHDXRegionEntry(guid: GUID("12345678-1234-1234-1234-123456789abc")!, fileOffset: 40 << 20, length: 1 << 20, required: false))
        try poke(path, VHDX.regionTable2Offset, t.serialize())
        try expectFinding(path, "region table 2", VHDX.regionTable2Offset, "differs")
    }

    @Test func regionOverlapAndAlignment() throws {
        let d = Scratch("chk-ov")
        let (path, f) = try clean(d)
        var t = f.regionTable
        t.entries[1].fileOffset = f.batOffset  // metadata on top of the BAT
        try poke(path, VHDX.regionTable1Offset, t.serialize())
        try poke(path, VHDX.regionTable2Offset, t.serialize())
        try expectFinding(path, "region table 1 entry 1", VHDX.regionTable1Offset + 48, "overlaps region entry 0")
        t = f.regionTable
        t.entries[1].fileOffset += 4096
        try poke(path, VHDX.regionTable1Offset, t.serialize())
        try poke(path, VHDX.regionTable2Offset, t.serialize())
        try expectFinding(path, "region table 1 entry 1", VHDX.regionTable1Offset + 48, "not 1 MiB-aligned")
        t = f.regionTable
        t.entries[0].fileOffset = VHDX.mib  // BAT over the log
        try poke(path, VHDX.regionTable1Offset, t.serialize())
        try poke(path, VHDX.regionTable2Offset, t.serialize())
        try expectFinding(path, "region table 1 entry 0", VHDX.regionTable1Offset + 16, "overlaps the log")
    }

    @Test func invalidStatesAndReservedBits() throws {
        let d = Scratch("chk-st")
        let (path, f) = try clean(d)
        try setBAT(path, f, index: 5, 4)
        try expectFinding(path, "BAT entry 5", f.batOffset + 40, "invalid payload block state 4")
        try setBAT(path, f, index: 5, 2 | 0x100)
        try expectFinding(path, "BAT entry 5", f.batOffset + 40, "reserved bits")
        try setBAT(path, f, index: 5, 7 | (5 << 20))
        try expectFinding(path, "BAT entry 5", f.batOffset + 40, "PARTIALLY_PRESENT")
        try setBAT(path, f, index: 5, 2 | (5 << 20))
        try expectFinding(path, "BAT entry 5", f.batOffset + 40, "PAYLOAD_BLOCK_ZERO with non-zero file offset")
    }

    @Test func duplicateOverlappingAndPastEOF() throws {
        let d = Scratch("chk-dup")
        let (path, f) = try clean(d)
        let e0 = f.batEntries[0]
        try setBAT(path, f, index: 5, e0)
        try expectFinding(path, "BAT entry 5", f.batOffset + 40, "duplicates BAT entry 0")
        try setBAT(path, f, index: 5, VHDX.batEntry(state: 6, fileOffset: 1 << 30))
        try expectFinding(path, "BAT entry 5", f.batOffset + 40, "past end of file")
        try setBAT(path, f, index: 5, VHDX.batEntry(state: 6, fileOffset: f.batOffset))
        try expectFinding(path, "BAT entry 5", f.batOffset + 40, "overlaps the BAT region")
        try setBAT(path, f, index: 5, VHDX.batEntry(state: 6, fileOffset: 0))
        try expectFinding(path, "BAT entry 5", f.batOffset + 40, "header section")
    }

    @Test func metadataConsistency() throws {
        let cases: [(@Sendable (inout VHDXMetadata) -> Void, String, UInt64, String)] = [
            ({ $0.virtualSize = 8 << 20 + 100 }, "virtual disk size", 2 * VHDX.mib + 0x10008, "not a multiple"),
            ({ $0.blockSize = 3 << 20 }, "file parameters", 2 * VHDX.mib + 0x10000, "power of 2"),
            ({ $0.logicalSectorSize = 1024 }, "logical sector size", 2 * VHDX.mib + 0x10020, "not 512 or 4096"),
            ({ $0.virtualSize = 1 << 40 }, "BAT region", 3 * VHDX.mib, "entries need"),  // BAT too small
        ]
        for (change, structure, offset, text) in cases {
            let d = Scratch("chk-md")
            let (path, _) = try clean(d)
            try rewriteMetadata(path, change)
            try expectFinding(path, structure, offset, text)
        }
    }

    @Test func sectorBitmapEntryInDynamicDisk() throws {
        let d = Scratch("chk-sb")
        let path = d.file("big.vhdx")
        // 1 MiB blocks: chunk ratio 4096, so a 4097-block disk has one SB entry at index 4096.
        let f = try VHDXFile.createDynamic(path: path, virtualSize: 4097 << 20, blockSize: 1 << 20)
        try setBAT(path, f, index: 4096, VHDX.batEntry(state: 6, fileOffset: 3 << 20))
        try expectFinding(path, "BAT entry 4096", f.batOffset + 4096 * 8, "sector bitmap entry")
    }

    @Test func logWithoutValidSequence() throws {
        let d = Scratch("chk-log")
        let (path, f) = try clean(d)
        var h = f.header
        h.logGuid = GUID.derived(seed: [], label: "x")
        h.sequenceNumber += 1
        try poke(path, VHDX.header1Offset, h.serialize())
        h.sequenceNumber += 1
        try poke(path, VHDX.header2Offset, h.serialize())
        try expectFinding(path, "log", VHDX.mib, "no valid sequence")
    }

    @Test func notAVHDXCannotBeChecked() throws {
        let d = Scratch("chk-none")
        try RawFile.create(path: d.file("x"), size: 0).write(at: 0, pattern(4096, seed: 1))
        #expect(throws: VHDXCheck.CannotCheck.self) { _ = try VHDXCheck.run(path: d.file("x")) }
    }
}

/// Bad input: typed errors, no crash, no allocation beyond what the file justifies.
@Suite struct VHDXReaderBadInputTests {
    func build(_ d: Scratch) throws -> String {
        let path = d.file("ok.vhdx")
        let f = try VHDXFile.createDynamic(path: path, virtualSize: 8 << 20, blockSize: 1 << 20)
        try pattern(8192, seed: 1).withUnsafeBytes { try f.write(at: 0, from: $0) }
        try f.flush()
        return path
    }

    @Test func truncatedFiles() throws {
        let d = Scratch("bad-trunc")
        let bytes = try fileBytes(try build(d))
        for n in [0, 7, 8, 600, 0x10000, 0x20100, 0x40000, 0x100000, 0x300000, 0x400000, bytes.count - 4096] {
            #expect(throws: (any Error).self, "\(n)") { _ = try VHDXFile(source: MemorySource(Array(bytes.prefix(n)))) }
            fuzzVHDXOne(UnsafeRawBufferPointer(start: nil, count: 0))
        }
    }

    @Test func randomBytes() throws {
        for s in 1...20 as ClosedRange<UInt64> {
            var b = pattern(2 << 20, seed: s)
            if s % 2 == 0 { b.replaceSubrange(0..<8, with: VHDX.fileSignature) }
            #expect(throws: (any Error).self) { _ = try VHDXFile(source: MemorySource(b)) }
            b.withUnsafeBytes { fuzzVHDXOne($0) }
        }
    }

    @Test func absurdCounts() throws {
        let d = Scratch("bad-count")
        var bytes = try fileBytes(try build(d))
        // Region table EntryCount 2^31, checksum fixed up so the count itself is what fails.
        var rt = Array(bytes[0x30000..<0x40000])
        rt.putLE32(1 << 31, at: 8)
        rt.putLE32(CRC32C.checksum(rt, zeroingFieldAt: 4), at: 4)
        var b1 = bytes
        b1.replaceSubrange(0x30000..<0x40000, with: rt)
        b1.replaceSubrange(0x40000..<0x50000, with: rt)
        #expect { _ = try VHDXFile(source: MemorySource(b1)) } throws: { e in
            (e as? FormatError).map { $0.structure == "region table 1" && $0.offset == 0x30008 } ?? false
        }
        // A BAT region larger than the file.
        var t = try VHDXRegionTable.parse(Array(bytes[0x30000..<0x40000]), at: 0x30000, name: "rt")
        t.entries[0].length = 0x4000_0000
        bytes.replaceSubrange(0x30000..<0x40000, with: t.serialize())
        bytes.replaceSubrange(0x40000..<0x50000, with: t.serialize())
        #expect { _ = try VHDXFile(source: MemorySource(bytes)) } throws: { e in
            (e as? FormatError).map { $0.structure == "region table 1 entry 0" && $0.reason.contains("past end of file") } ?? false
        }
    }
}
