import Testing
import Foundation
import TestSupport
import BlockCore
@testable import Exposure

func readAll(_ s: any BlockSource) throws -> [UInt8] { try s.read(at: 0, count: Int(s.size)) }

@Suite struct OverlayTests {
    @Test(arguments: [UInt32(512), 4096, 65536])
    func randomWritesMatchAModelAndNeverTouchTheBase(unit: UInt32) throws {
        let dir = Scratch()
        var rng = Bytes(seed: UInt64(unit))
        // Odd size: the last unit is partial.
        let baseBytes = rng.bytes(300_000 + 333)
        let base = MemorySource(baseBytes)
        var model = baseBytes
        let overlay = try WriteOverlay(base: base, path: dir.file("d.overlay"), unitSize: unit)
        for i in 0..<60 {
            let len = Int(rng.next() % 20_000) + 1
            let off = Int(rng.next() % UInt64(model.count - len + 1))
            let data = rng.bytes(len)
            try data.withUnsafeBytes { try overlay.write(at: UInt64(off), from: $0) }
            model.replaceSubrange(off..<off + len, with: data)
            if i % 10 == 9 {
                let diff = firstDifference(try readAll(overlay), model)
                #expect(diff == nil)
            }
        }
        // Reads of odd slices, crossing written and unwritten units.
        for _ in 0..<50 {
            let len = Int(rng.next() % 9000)
            let off = Int(rng.next() % UInt64(model.count - len + 1))
            #expect(try overlay.read(at: UInt64(off), count: len) == Array(model[off..<off + len]))
        }
        let baseUntouched = base.contents == baseBytes
        #expect(baseUntouched)
        try overlay.flush()

        let reopened = try WriteOverlay(base: base, path: dir.file("d.overlay"), unitSize: unit)
        let diff = firstDifference(try readAll(reopened), model)
        #expect(diff == nil)
        #expect(reopened.replayedRecords > 0)
        #expect(reopened.droppedTornBytes == 0)
        #expect(reopened.writtenRanges == overlay.writtenRanges)
    }

    @Test func writesPastTheEndAreRefused() throws {
        let dir = Scratch()
        let overlay = try WriteOverlay(base: MemorySource([UInt8](repeating: 1, count: 4096)), path: dir.file("o"), unitSize: 512)
        #expect(throws: BlockSourceError.self) { try [UInt8](repeating: 0, count: 2).withUnsafeBytes { try overlay.write(at: 4095, from: $0) } }
        #expect(try overlay.read(at: 4095, count: 1) == [1])
    }

    @Test func tornFinalRecordIsDroppedAndEarlierRecordsKept() throws {
        let dir = Scratch()
        let base = MemorySource([UInt8](repeating: 7, count: 64 << 10))
        let path = dir.file("o")
        do {
            let o = try WriteOverlay(base: base, path: path, unitSize: 4096)
            try [UInt8](repeating: 0xAA, count: 4096).withUnsafeBytes { try o.write(at: 8192, from: $0) }
            try [UInt8](repeating: 0xBB, count: 10).withUnsafeBytes { try o.write(at: 20000, from: $0) }
        }
        // A crash in the middle of an append leaves a partial record.
        let journal = try #require(FileHandle(forUpdatingAtPath: path + ".map"))
        journal.seekToEndOfFile()
        journal.write(Data([0x4F, 0x56, 0x52, 0x43, 1, 0, 0]))
        journal.closeFile()
        let o = try WriteOverlay(base: base, path: path, unitSize: 4096)
        #expect(o.droppedTornBytes == 7)
        #expect(o.replayedRecords == 2)
        #expect(try o.read(at: 8192, count: 4096) == [UInt8](repeating: 0xAA, count: 4096))
        #expect(try o.read(at: 20000, count: 10) == [UInt8](repeating: 0xBB, count: 10))
        #expect(try o.read(at: 19999, count: 1) == [7])
        // The torn tail was cut, so the next append follows the last good record.
        try [UInt8](repeating: 0xCC, count: 1).withUnsafeBytes { try o.write(at: 40000, from: $0) }
        let again = try WriteOverlay(base: base, path: path, unitSize: 4096)
        #expect(again.replayedRecords == 3 && again.droppedTornBytes == 0)
        #expect(try again.read(at: 40000, count: 1) == [0xCC])
    }

    @Test func corruptRecordBeforeTheEndIsAnError() throws {
        let dir = Scratch()
        let base = MemorySource([UInt8](repeating: 0, count: 64 << 10))
        let path = dir.file("o")
        do {
            let o = try WriteOverlay(base: base, path: path, unitSize: 4096)
            for u in [0, 2, 4] { try [UInt8](repeating: 1, count: 1).withUnsafeBytes { try o.write(at: UInt64(u * 4096), from: $0) } }
        }
        var j = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path + ".map")))
        #expect(j.count == OverlayJournal.headerSize + 3 * OverlayJournal.recordSize)
        j[OverlayJournal.headerSize + 9] ^= 0x01 // first record's unit field
        try Data(j).write(to: URL(fileURLWithPath: path + ".map"))
        #expect {
            _ = try WriteOverlay(base: base, path: path, unitSize: 4096)
        } throws: { error in
            guard let e = error as? FormatError else { return false }
            return e.structure == "record 0" && e.reason.contains("CRC-32C")
        }
    }

    @Test func journalNamingUnitsOutsideTheDiskIsRejected() throws {
        let dir = Scratch()
        let base = MemorySource([UInt8](repeating: 0, count: 8192))
        let path = dir.file("o")
        _ = try WriteOverlay(base: base, path: path, unitSize: 4096)
        let h = try #require(FileHandle(forUpdatingAtPath: path + ".map"))
        h.seekToEndOfFile()
        h.write(Data(OverlayJournal.encodeRecord(first: 1, count: 5, sequence: 0)))
        h.write(Data(OverlayJournal.encodeRecord(first: 0, count: 1, sequence: 1)))
        h.closeFile()
        #expect(throws: FormatError.self) { _ = try WriteOverlay(base: base, path: path, unitSize: 4096) }
    }

    @Test func reopeningOverADifferentBaseIsRefused() throws {
        let dir = Scratch()
        let path = dir.file("o")
        _ = try WriteOverlay(base: MemorySource([UInt8](repeating: 0, count: 8192)), path: path, baseIdentity: [1, 2, 3])
        #expect(throws: FormatError.self) { _ = try WriteOverlay(base: MemorySource([UInt8](repeating: 0, count: 4096)), path: path) }
        #expect(throws: FormatError.self) {
            _ = try WriteOverlay(base: MemorySource([UInt8](repeating: 0, count: 8192)), path: path, baseIdentity: [9])
        }
        _ = try WriteOverlay(base: MemorySource([UInt8](repeating: 0, count: 8192)), path: path, baseIdentity: [1, 2, 3])
    }

    @Test func extentsReportWrittenUnitsAsData() throws {
        let dir = Scratch()
        let base = MemorySource([UInt8](repeating: 0, count: 1 << 20), zeroRanges: [(256 << 10)..<(1 << 20)])
        let o = try WriteOverlay(base: base, path: dir.file("o"), unitSize: 65536)
        try [UInt8](repeating: 5, count: 100).withUnsafeBytes { try o.write(at: 512 << 10, from: $0) }
        #expect(try o.allExtents() == [
            Extent(offset: 0, length: 256 << 10, kind: .data),
            Extent(offset: 256 << 10, length: 256 << 10, kind: .zero),
            Extent(offset: 512 << 10, length: 64 << 10, kind: .data),
            Extent(offset: 576 << 10, length: 448 << 10, kind: .zero),
        ])
        #expect(try o.extents(in: 520_000..<530_000) == [
            Extent(offset: 520_000, length: 4288, kind: .zero),
            Extent(offset: 524_288, length: 5712, kind: .data),
        ])
    }

    @Test func concurrentWritersToSharedUnitsLoseNothing() async throws {
        let dir = Scratch()
        let base = MemorySource([UInt8](repeating: 0xEE, count: 1 << 20))
        let o = try WriteOverlay(base: base, path: dir.file("o"), unitSize: 65536)
        // 8 writers, each owning every 8th 1000-byte slot: slots share units, bytes never overlap.
        await withTaskGroup(of: Void.self) { g in
            for w in 0..<8 {
                g.addTask {
                    for slot in stride(from: w, to: 1000, by: 8) {
                        let data = [UInt8](repeating: UInt8(w + 1), count: 1000)
                        try? data.withUnsafeBytes { try o.write(at: UInt64(slot * 1000), from: $0) }
                    }
                }
            }
        }
        let all = try readAll(o)
        for slot in 0..<1000 {
            #expect(all[slot * 1000..<slot * 1000 + 1000].allSatisfy { $0 == UInt8(slot % 8 + 1) })
        }
        #expect(all[1_000_000...].allSatisfy { $0 == 0xEE })
        let reopened = try WriteOverlay(base: base, path: dir.file("o"))
        let diff = firstDifference(try readAll(reopened), all)
        #expect(diff == nil)
    }

    @Test func unitRangeSetMergesAndSplits() {
        var s = UnitRangeSet()
        s.insert(5..<7); s.insert(10..<12); s.insert(7..<10)
        #expect(s.ranges == [5..<12])
        s.insert(0..<1); s.insert(20..<30); s.insert(1..<2)
        #expect(s.ranges == [0..<2, 5..<12, 20..<30])
        #expect(s.missing(in: 0..<25) == [2..<5, 12..<20])
        #expect(s.contains(11) && !s.contains(12) && s.contains(0) && !s.contains(30))
        s.insert(3..<25)
        #expect(s.ranges == [0..<2, 3..<30])
        #expect(s.count == 29)
    }
}

/// First offset where two byte arrays differ (or the shorter length), nil when equal. Tests compare
/// large buffers through this: an `#expect(a == b)` failure on megabytes makes Swift Testing diff
/// the arrays, which takes minutes.
func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int? {
    if a == b { return nil }
    for i in 0..<min(a.count, b.count) where a[i] != b[i] { return i }
    return min(a.count, b.count)
}
