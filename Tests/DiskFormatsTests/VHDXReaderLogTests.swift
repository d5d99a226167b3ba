import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// Files with a non-empty log, written with our own log structures.
@Suite struct VHDXReaderLogTests {
    struct Dirty {
        let path: String
        let expected: [UInt8]
        let stale: [UInt8]
    }

    /// A 16 MiB dynamic file, block 5 written normally; then, only through the log: block 3
    /// becomes a new block (BAT sector update) and 8 KiB of block 5 are zeroed.
    func makeDirty(_ d: Scratch) throws -> Dirty {
        let path = d.file("dirty.vhdx")
        let mib = Int(VHDX.mib)
        let f = try VHDXFile.createDynamic(path: path, virtualSize: 16 << 20, blockSize: 1 << 20, seed: [7])
        let block5 = pattern(mib, seed: 5)
        try block5.withUnsafeBytes { try f.write(at: 5 << 20, from: $0) }
        try f.flush()
        var stale = [UInt8](repeating: 0, count: 16 << 20)
        stale.replaceSubrange(5 * mib..<6 * mib, with: block5)
        let raw = try RawFile(path: path, writable: true)
        let newBlock = VHDX.roundUp(raw.size, to: VHDX.mib)
        let block3 = pattern(mib, seed: 3)
        try raw.write(at: newBlock, block3)
        var batSector = try raw.read(at: f.batOffset, count: 4096)
        batSector.putLE64(VHDX.batEntry(state: 6, fileOffset: newBlock), at: Int(f.geometry.payloadIndex(3)) * 8)
        let block5Offset = VHDX.batOffset(f.batEntries[Int(f.geometry.payloadIndex(5))])
        let logGuid = GUID.derived(seed: [7], label: "log")
        let end = newBlock + VHDX.mib
        let entry = VHDXLogEntry(sequenceNumber: 10, tail: 0, logGuid: logGuid, flushedFileOffset: end, lastFileOffset: end,
                                 descriptors: [.data(fileOffset: f.batOffset, sector: batSector),
                                               .zero(fileOffset: block5Offset + 4096, length: 8192)])
        try raw.write(at: f.header.logOffset, entry.serialize())
        var h = f.header
        h.logGuid = logGuid
        h.sequenceNumber += 1
        try raw.write(at: VHDX.header1Offset, h.serialize())
        h.sequenceNumber += 1
        try raw.write(at: VHDX.header2Offset, h.serialize())
        try raw.flush()
        var expected = stale
        expected.replaceSubrange(3 * mib..<4 * mib, with: block3)
        expected.replaceSubrange(5 * mib + 4096..<5 * mib + 12288, with: [UInt8](repeating: 0, count: 8192))
        return Dirty(path: path, expected: expected, stale: stale)
    }

    @Test func replaysInMemoryAsQemuDoesOnRepair() throws {
        let d = Scratch("log")
        let dirty = try makeDirty(d)
        let before = try sha(dirty.path)
        let f = try VHDXFile.open(path: dirty.path)
        #expect(f.logNeedsRepair)
        #expect(f.replayedLog.map(\.sequenceNumber) == [10])
        #expect(try readAll(f) == dirty.expected)
        #expect(try sha(dirty.path) == before)  // read-only replay never writes
        // QEMU refuses read-only opens of a dirty file; libvhdi ignores the log (stale bytes).
        let info = try sh(["qemu-img", "info", dirty.path])
        #expect(info.status != 0 && info.output.contains("log"))
        #expect(try readWithVhdimount(dirty.path, in: d) == dirty.stale)
        // QEMU's own replay (check -r all) gives exactly our bytes.
        let copy = d.file("copy.vhdx")
        try run("cp", "--sparse=always", dirty.path, copy)
        _ = try sh(["qemu-img", "check", "-r", "all", "-f", "vhdx", copy])
        try run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", copy, d.file("q.raw"))
        #expect(try fileBytes(d.file("q.raw")) == dirty.expected)
        // check reports the pending log as a warning, not corruption.
        let report = try VHDXCheck.run(path: dirty.path)
        #expect(!report.isCorrupt)
        #expect(report.findings.contains { $0.structure == "log" && $0.severity == .warning && $0.offset == VHDX.mib })
    }

    @Test func repairWritesBackAndEmptiesLog() throws {
        let d = Scratch("repair")
        let dirty = try makeDirty(d)
        let f = try VHDXFile.open(path: dirty.path, writable: true)
        #expect(throws: FormatError.self) { try [1].withUnsafeBytes { try f.write(at: 0, from: $0) } }
        #expect(try f.repair())
        #expect(!f.logNeedsRepair)
        let g = try VHDXFile.open(path: dirty.path)
        #expect(g.replayedLog.isEmpty && g.header.logGuid.isZero)
        #expect(try readAll(g) == dirty.expected)
        try run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", dirty.path, d.file("q.raw"))
        #expect(try fileBytes(d.file("q.raw")) == dirty.expected)
        #expect(try VHDXCheck.run(path: dirty.path).findings.isEmpty)
    }

    /// The spec's active-sequence rules: the valid sequence whose head has the largest sequence
    /// number, where a head's Tail must lie inside its sequence. An entry with a larger number but
    /// a Tail outside any sequence (QEMU would pick it: it ignores Tail), an older sequence, and a
    /// corrupt entry after the head must all be ignored.
    @Test func activeSequenceFollowsSpec() throws {
        let d = Scratch("seq")
        let path = d.file("s.vhdx")
        let f = try VHDXFile.createDynamic(path: path, virtualSize: 8 << 20, blockSize: 1 << 20, seed: [8])
        let raw = try RawFile(path: path, writable: true)
        let logGuid = GUID.derived(seed: [8], label: "log")
        let bat0 = try raw.read(at: f.batOffset, count: 4096)
        var blocks: [UInt64] = []
        for k in 0..<5 {
            let off = VHDX.roundUp(raw.size, to: VHDX.mib)
            try raw.write(at: off, [UInt8](repeating: UInt8(0xA0 + k), count: Int(VHDX.mib)))
            blocks.append(off)
        }
        let end = VHDX.roundUp(raw.size, to: VHDX.mib)
        // Every entry maps block 1 to blocks[4] and block 2 to blocks[block]; entry A also writes
        // 0x77 over the first 4 KiB of blocks[4], so block 1 shows whether A was replayed.
        func entry(_ seq: UInt64, tail: UInt32, block: Int, extraBlock1: Bool = false) -> [UInt8] {
            var s = bat0
            s.putLE64(VHDX.batEntry(state: 6, fileOffset: blocks[block]), at: Int(f.geometry.payloadIndex(2)) * 8)
            s.putLE64(VHDX.batEntry(state: 6, fileOffset: blocks[4]), at: Int(f.geometry.payloadIndex(1)) * 8)
            var ds: [VHDXLogDescriptor] = [.data(fileOffset: f.batOffset, sector: s)]
            if extraBlock1 { ds.append(.data(fileOffset: blocks[4], sector: [UInt8](repeating: 0x77, count: 4096))) }
            return VHDXLogEntry(sequenceNumber: seq, tail: tail, logGuid: logGuid, flushedFileOffset: end, lastFileOffset: end,
                                descriptors: ds).serialize()
        }
        let log = f.header.logOffset
        try raw.write(at: log + 0, entry(5, tail: 0, block: 0, extraBlock1: true))  // A: tail of the active sequence
        try raw.write(at: log + 0x3000, entry(6, tail: 0, block: 1))                // B: head (seq 6)
        var bad = entry(7, tail: 0, block: 2)                                       // C: corrupt successor
        bad[100] ^= 1
        try raw.write(at: log + 0x5000, bad)
        try raw.write(at: log + 0x10000, entry(3, tail: 0x10000, block: 2))         // older valid sequence
        try raw.write(at: log + 0x20000, entry(100, tail: 0x30000, block: 3))       // Tail outside: invalid
        var h = f.header
        h.logGuid = logGuid
        h.sequenceNumber += 1
        try raw.write(at: VHDX.header1Offset, h.serialize())
        h.sequenceNumber += 1
        try raw.write(at: VHDX.header2Offset, h.serialize())
        try raw.flush()
        let g = try VHDXFile.open(path: path)
        #expect(g.replayedLog.map(\.sequenceNumber) == [5, 6])
        #expect(try g.read(at: 2 << 20, count: 16) == [UInt8](repeating: 0xA1, count: 16))  // B's block
        #expect(try g.read(at: 1 << 20, count: 16) == [UInt8](repeating: 0x77, count: 16))  // A was replayed too
        #expect(try g.read(at: (1 << 20) + 4096, count: 16) == [UInt8](repeating: 0xA4, count: 16))
        #expect(try g.read(at: 0, count: 16) == [UInt8](repeating: 0, count: 16))
        // No valid sequence while LogGuid is set: the file is corrupt and refused.
        try raw.write(at: log, [UInt8](repeating: 0, count: 0x40000))
        try raw.flush()
        #expect(throws: FormatError.self) { _ = try VHDXFile.open(path: path) }
        #expect(try VHDXCheck.run(path: path).findings.contains { $0.structure == "log" && $0.severity == .corruption })
    }

    /// A head whose FlushedFileOffset lies past the end of the file means truncation [SPEC:521].
    @Test func truncatedAfterFlushIsRefused() throws {
        let d = Scratch("trunc-log")
        let dirty = try makeDirty(d)
        let raw = try RawFile(path: dirty.path, writable: true)
        try raw.truncate(to: raw.size - VHDX.mib)
        #expect { _ = try VHDXFile.open(path: dirty.path) } throws: { e in
            (e as? FormatError)?.reason.contains("truncated") == true
        }
    }
}
