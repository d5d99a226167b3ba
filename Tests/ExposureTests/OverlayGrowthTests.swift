import Testing
import Foundation
import TestSupport
import BlockCore
@testable import Exposure

private func write(_ o: WriteOverlay, _ byte: UInt8, at offset: UInt64, count: Int, extending: Bool = false) throws {
    try [UInt8](repeating: byte, count: count).withUnsafeBytes {
        if extending { try o.writeExtending(at: offset, from: $0) } else { try o.write(at: offset, from: $0) }
    }
}

private func journal(_ path: String) throws -> [UInt8] { try [UInt8](Data(contentsOf: URL(fileURLWithPath: path + ".map"))) }

private func append(_ path: String, _ bytes: [UInt8]) throws {
    let h = try #require(FileHandle(forUpdatingAtPath: path + ".map"))
    h.seekToEndOfFile()
    h.write(Data(bytes))
    h.closeFile()
}

private func fileSize(_ path: String) -> UInt64 {
    var st = stat()
    return stat(path, &st) == 0 ? UInt64(st.st_size) : 0
}

/// The overlay's logical size may grow past the base (a VHDX writer allocating blocks) and shrink
/// back to no less than the base; every size change is journaled and replayed.
@Suite struct OverlayGrowthTests {
    @Test func growthReadsZerosSurvivesReopenAndReportsAbsentTail() throws {
        let dir = Scratch()
        let base = MemorySource([UInt8](repeating: 7, count: 10_000))
        let path = dir.file("o")
        var model = [UInt8](repeating: 7, count: 10_000)
        do {
            let o = try WriteOverlay(base: base, path: path, unitSize: 4096, maxSize: 100_000)
            #expect(o.size == 10_000 && o.maxSize == 100_000 && o.minSize == 10_000)
            try o.resize(to: 50_000)
            model += [UInt8](repeating: 0, count: 40_000)
            #expect(o.size == 50_000)
            #expect(try o.read(at: 9_000, count: 41_000) == Array(model[9_000...]))
            #expect(try o.allExtents() == [Extent(offset: 0, length: 10_000, kind: .data),
                                           Extent(offset: 10_000, length: 40_000, kind: .absent)])
            // A write straddling the base's end, and one past the size that extends it.
            try write(o, 0xA1, at: 9_000, count: 2_000)
            model.replaceSubrange(9_000..<11_000, with: repeatElement(0xA1, count: 2_000))
            try write(o, 0xB2, at: 60_000, count: 5_000, extending: true)
            model += [UInt8](repeating: 0, count: 15_000)
            model.replaceSubrange(60_000..<65_000, with: repeatElement(0xB2, count: 5_000))
            #expect(o.size == 65_000)
            #expect(firstDifference(try readAll(o), model) == nil)
            // Base data, then the written unit past the base's end, the unwritten tail, the written end.
            #expect(try o.extents(in: 0..<65_000) == [
                Extent(offset: 0, length: 12288, kind: .data),
                Extent(offset: 12288, length: 57344 - 12288, kind: .absent),
                Extent(offset: 57344, length: 65_000 - 57344, kind: .data),
            ])
            // A plain write past the end is still out of range; so is a size past the limit.
            #expect(throws: BlockSourceError.self) { try write(o, 1, at: 65_000, count: 1) }
            #expect(throws: ResizeError.beyondLimit(requested: 100_001, limit: 100_000)) { try o.resize(to: 100_001) }
            #expect(throws: ResizeError.beyondLimit(requested: 100_001, limit: 100_000)) {
                try write(o, 1, at: 100_000, count: 1, extending: true)
            }
            #expect(throws: ResizeError.belowMinimum(requested: 9_999, minimum: 10_000)) { try o.resize(to: 9_999) }
            #expect(o.size == 65_000)
        }
        // Reopening (as after kill -9: nothing was flushed) restores the size and the bytes.
        #expect(try WriteOverlay.recordedSize(path: path) == 65_000)
        let again = try WriteOverlay(base: base, path: path, unitSize: 4096, maxSize: 100_000)
        #expect(again.size == 65_000)
        #expect(firstDifference(try readAll(again), model) == nil)
        #expect(base.contents == [UInt8](repeating: 7, count: 10_000), "the base is never written")
        // Opened with a limit below the size it reached: refused, with a message saying so.
        #expect {
            _ = try WriteOverlay(base: base, path: path, unitSize: 4096)
        } throws: { e in (e as? FormatError)?.reason.contains("grew to 65000") == true }
        #expect(try WriteOverlay.recordedSize(path: dir.file("none")) == nil)
    }

    @Test func shrinkCutsTheTailAndRegrowthReadsZeros() throws {
        let dir = Scratch()
        let base = MemorySource([UInt8](repeating: 3, count: 8192))
        let path = dir.file("o")
        do {
            let o = try WriteOverlay(base: base, path: path, unitSize: 4096, maxSize: 1 << 20)
            try write(o, 0xAA, at: 20_000, count: 20_000, extending: true)
            try o.resize(to: 30_000)
            #expect(fileSize(path) <= 30_000, "the data file holds nothing past the size")
            try o.resize(to: 50_000)
            #expect(try o.read(at: 20_000, count: 10_000) == [UInt8](repeating: 0xAA, count: 10_000))
            #expect(try o.read(at: 30_000, count: 20_000) == [UInt8](repeating: 0, count: 20_000))
            // A partial write into a unit the shrink cut: its other bytes are zeros, not stale data.
            try write(o, 0xCC, at: 36_000, count: 10)
            #expect(try o.read(at: 35_990, count: 30) == [UInt8](repeating: 0, count: 10) + [UInt8](repeating: 0xCC, count: 10) + [UInt8](repeating: 0, count: 10))
        }
        let again = try WriteOverlay(base: base, path: path, unitSize: 4096, maxSize: 1 << 20)
        #expect(again.size == 50_000)
        var model = [UInt8](repeating: 3, count: 8192) + [UInt8](repeating: 0, count: 50_000 - 8192)
        model.replaceSubrange(20_000..<30_000, with: repeatElement(0xAA, count: 10_000))
        model.replaceSubrange(36_000..<36_010, with: repeatElement(0xCC, count: 10))
        #expect(firstDifference(try readAll(again), model) == nil)
    }

    @Test func shrinkCutShortByACrashIsCompletedOnReopen() throws {
        let dir = Scratch()
        let base = MemorySource([UInt8](repeating: 1, count: 4096))
        let path = dir.file("o")
        let records: UInt32
        do {
            let o = try WriteOverlay(base: base, path: path, unitSize: 4096, maxSize: 1 << 20)
            try write(o, 0xEE, at: 4096, count: 16_384, extending: true)
            records = o.replayedRecords + 2
        }
        // The size record is durable, then the process dies before truncating the data file.
        try append(path, OverlayJournal.encodeSizeRecord(size: 8192, sequence: records))
        #expect(fileSize(path) == 20_480)
        let o = try WriteOverlay(base: base, path: path, unitSize: 4096, maxSize: 1 << 20)
        #expect(o.size == 8192)
        #expect(fileSize(path) == 8192)
        try o.resize(to: 20_480)
        #expect(try o.read(at: 8192, count: 12_288) == [UInt8](repeating: 0, count: 12_288))
        #expect(try o.read(at: 4096, count: 4096) == [UInt8](repeating: 0xEE, count: 4096))
    }

    @Test func tornSizeRecordIsDroppedAndCorruptOneIsAnError() throws {
        let dir = Scratch()
        let base = MemorySource([UInt8](repeating: 1, count: 4096))
        let path = dir.file("o")
        do {
            let o = try WriteOverlay(base: base, path: path, unitSize: 512, maxSize: 1 << 20)
            try o.resize(to: 10_000)
            try o.resize(to: 20_000)
        }
        var j = try journal(path)
        #expect(j.count == OverlayJournal.headerSize + 2 * OverlayJournal.recordSize)
        // The final append torn by a crash: the size it announced was never acknowledged.
        try Data(j.dropLast(5)).write(to: URL(fileURLWithPath: path + ".map"))
        let o = try WriteOverlay(base: base, path: path, unitSize: 512, maxSize: 1 << 20)
        #expect(o.size == 10_000 && o.droppedTornBytes == 27)
        try o.resize(to: 30_000)
        #expect(try WriteOverlay(base: base, path: path, unitSize: 512, maxSize: 1 << 20).size == 30_000)
        // Damage before the last record is corruption: nothing is served.
        j = try journal(path)
        j[OverlayJournal.headerSize + 8] ^= 0x40
        try Data(j).write(to: URL(fileURLWithPath: path + ".map"))
        #expect {
            _ = try WriteOverlay(base: base, path: path, unitSize: 512, maxSize: 1 << 20)
        } throws: { e in (e as? FormatError)?.structure == "record 0" }
        // A size record outside base...limit is refused even when its CRC is right.
        var bad = OverlayJournal.encode(.init(unitSize: 512, virtualSize: 4096, baseIdentity: [], sizeLimit: 8192))
        bad += OverlayJournal.encodeSizeRecord(size: 8193, sequence: 0) + OverlayJournal.encodeSizeRecord(size: 5000, sequence: 1)
        #expect(throws: FormatError.self) { _ = try WriteOverlay.checkJournal(bad) }
    }

    @Test func versionOneJournalsAreReadAndUpgraded() throws {
        let dir = Scratch()
        let base = MemorySource([UInt8](repeating: 9, count: 16_384))
        let path = dir.file("o")
        // A version 1 overlay as the previous BootLab wrote it: unit 2 holds 0x44.
        var h = [UInt8](repeating: 0, count: 64)
        h.replaceSubrange(0..<8, with: Array("BLOVMAP1".utf8))
        h.putLE32(1, at: 8); h.putLE32(4096, at: 12); h.putLE64(16_384, at: 16)
        h.putLE32(CRC32C.checksum(Array(h[0..<60])), at: 60)
        try Data(h + OverlayJournal.encodeRecord(first: 2, count: 1, sequence: 0)).write(to: URL(fileURLWithPath: path + ".map"))
        var data = [UInt8](repeating: 0, count: 16_384)
        data.replaceSubrange(8192..<12_288, with: repeatElement(0x44, count: 4096))
        try Data(data).write(to: URL(fileURLWithPath: path))
        #expect(try WriteOverlay.checkJournal(try journal(path)).records == 1)

        let o = try WriteOverlay(base: base, path: path, unitSize: 4096, maxSize: 65_536)
        #expect(o.rewroteJournal)
        #expect(try journal(path).le32(8) == 2, "upgraded in place (atomic rename)")
        #expect(try o.read(at: 8190, count: 4) == [9, 9, 0x44, 0x44])
        try o.resize(to: 40_000)
        let again = try WriteOverlay(base: base, path: path, unitSize: 4096, maxSize: 65_536)
        #expect(!again.rewroteJournal && again.size == 40_000)
        #expect(try again.read(at: 12_286, count: 4) == [0x44, 0x44, 9, 9])

        // A future version is refused with a message naming it.
        var future = try journal(path)
        future.putLE32(3, at: 8)
        #expect {
            _ = try WriteOverlay.checkJournal(future)
        } throws: { e in (e as? FormatError)?.reason.contains("unsupported version 3") == true }
    }

    @Test func manySizeChangesCompactTheJournal() throws {
        let dir = Scratch()
        let base = MemorySource([UInt8](repeating: 5, count: 4096))
        let path = dir.file("o")
        var model = [UInt8](repeating: 5, count: 4096)
        do {
            let o = try WriteOverlay(base: base, path: path, unitSize: 512, maxSize: 1 << 20)
            o.compactAfterSizeRecords = 8
            // A writer appending 100 bytes at a time: every write grows the file.
            for i in 0..<40 {
                let chunk = [UInt8](repeating: UInt8(i + 1), count: 100)
                try chunk.withUnsafeBytes { try o.writeExtending(at: UInt64(model.count), from: $0) }
                model += chunk
            }
            // Grow and shrink back: units past the size are dropped by compaction.
            for _ in 0..<10 { try o.resize(to: 100_000); try o.resize(to: UInt64(model.count)) }
            let j = try journal(path)
            let replay = try OverlayJournal.replay(j, path: "j")
            #expect(replay.sizeRecords <= 9)
            #expect(firstDifference(try readAll(o), model) == nil)
        }
        let again = try WriteOverlay(base: base, path: path, unitSize: 512, maxSize: 1 << 20)
        #expect(again.size == UInt64(model.count))
        #expect(firstDifference(try readAll(again), model) == nil)
        try again.resize(to: 20_000)
        #expect(try again.read(at: UInt64(model.count), count: 20_000 - model.count) == [UInt8](repeating: 0, count: 20_000 - model.count))
    }
}

/// The fuzz harness's seeds (Tests/FuzzCorpus/OverlayJournal) are journals a reopen accepts:
/// version 1 ones as the previous BootLab wrote them, version 2 ones with size records.
@Test func fuzzSeedsReplay() throws {
    let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("FuzzCorpus/OverlayJournal")
    func seed(_ name: String) throws -> [UInt8] { try [UInt8](Data(contentsOf: dir.appendingPathComponent(name))) }
    let grown = try WriteOverlay.checkJournal(seed("v2-grown"))
    #expect(grown.records == 4 && grown.tornBytes == 0)
    #expect(try WriteOverlay.journaledSize(seed("v2-grown")) == 100_000)
    let torn = try WriteOverlay.checkJournal(seed("v2-size-torn"))
    #expect(torn.records == 1 && torn.tornBytes == 19)
    #expect(try WriteOverlay.journaledSize(seed("v2-header-only")) == 65_536)
    #expect(try WriteOverlay.checkJournal(seed("two-records")).records == 2)
    #expect(try WriteOverlay.checkJournal(seed("header-only")).records == 0)
}
