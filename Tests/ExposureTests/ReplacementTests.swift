import Testing
import Foundation
import TestSupport
@testable import BackupImage
@testable import BlockCore
@testable import DiskFormats
@testable import Exposure

/// A plugin over a small volume-only, zstd-compressed, encrypted backup (data, holes, more data).
struct ReplacementFixture {
    let s = Scratch()
    let plugin: String
    let options: PluginFile.OpenOptions

    init(seed: UInt64 = 7, encrypt: Bool = true, format: String = VHDXView.formatName, formatKeys: [String: String] = [:]) throws {
        var volume = [UInt8](repeating: 0, count: 6 << 20)
        var b = Bytes(seed: seed)
        volume.replaceSubrange(0..<(1 << 20), with: b.bytes(1 << 20))
        volume.replaceSubrange((3 << 20)..<((3 << 20) + 300_000), with: b.bytes(300_000))
        volume.replaceSubrange((5 << 20)..<((5 << 20) + 4096), with: b.bytes(4096))
        let mbr = MBR(bootCode: [UInt8](repeating: 0xB0, count: 440), diskSignature: 0x1234_5678,
                      partitions: [MBR.Partition(type: 0x83, bootable: true, startLBA: 2048, sectorCount: UInt32(volume.count / 512)), nil, nil, nil])
        let disk = try RawFile.create(path: s.file("disk.raw"), size: (1 << 20) + UInt64(volume.count) + (1 << 20))
        try disk.write(at: 0, mbr.encode())
        try disk.write(at: 1 << 20, volume)
        try disk.flush()
        try FileManager.default.createDirectory(atPath: s.file("plug"), withIntermediateDirectories: true)
        var o = BackupCreateOptions()
        o.partition = 1
        o.imageID = BackupCreateOptions.imageID(seed: "replacement")
        o.blockSize = 64 << 10
        o.compression = .zstd
        if encrypt {
            o.encrypt = true
            o.passphrase = .bytes(Array("pw".utf8))
            o.scrypt = .testing
        }
        _ = try BackupImageWriter.create(sourcePath: s.file("disk.raw"), outputPath: s.file("plug/vm.bli"), options: o)
        var e = PluginFile.ExposeOptions()
        e.composer.bootCode = [UInt8](repeating: 0xB0, count: 440)
        e.format = format
        e.formatKeys = formatKeys
        if format == VHDXView.formatName { e.blockSize = 1 << 20 }
        if encrypt { e.passphrase = .bytes(Array("pw".utf8)) }
        plugin = s.file("plug/vm.\(format)")
        try PluginFile.expose(backupPath: s.file("plug/vm.bli"), pluginPath: plugin, options: e)
        var open = PluginFile.OpenOptions()
        if encrypt { open.passphrase = .bytes(Array("pw".utf8)) }
        options = open
    }

    func image() throws -> ExposedImage { try PluginFile.open(pluginPath: plugin, options: options) }

    /// The bytes the filter serves (the stream), read through a fresh plugin.
    func stream() throws -> [UInt8] {
        let p = try image()
        return try p.read(at: 0, count: Int(p.size))
    }

    static func options(chunk: UInt64 = 64 << 10, stopAfter: UInt64? = nil) -> Materializer.Options {
        var o = Materializer.Options()
        o.chunkSize = chunk
        o.batchBytes = 4 * chunk
        // Several batches per data sync, several data syncs per journal sync: the deferred paths.
        o.syncBytes = 2 * o.batchBytes
        o.journalSyncEvery = 2
        o.stopAfterBytes = stopAfter
        o.writeStatusFile = false
        return o
    }
}

@Suite struct ReplacementTests {
    @Test func fillResumesWithoutCopyingFinishedChunksAgain() throws {
        let f = try ReplacementFixture()
        let stream = try f.stream()
        let first = try Materializer.open(plugin: f.image(), options: ReplacementFixture.options(stopAfter: 512 << 10))
        try first.run()
        #expect(!first.isComplete)
        let copiedFirst = first.copiedChunks
        #expect(copiedFirst == 8)
        let total = first.chunkCount
        // The lock is the process's: a second opener in the same process must wait for the first to go.
        _ = consume first
        let second = try Materializer.open(plugin: f.image(), options: ReplacementFixture.options())
        #expect(second.filledChunks == copiedFirst)
        try second.run()
        #expect(second.isComplete)
        #expect(second.copiedChunks == total - copiedFirst, "a resumed fill copies only what was missing")
        // The replacement is the stream, except the signature, written at finalize.
        var expected = stream
        for i in 0..<8 { expected[i] = 0 }
        let replacement = try RawFile(path: ReplacementPaths(plugin: f.plugin).replacement)
        #expect(try replacement.read(at: 0, count: Int(replacement.size)) == expected)
        // Nothing is mistaken for a complete VHDX before finalize.
        #expect(try DiskFormatRegistry.detect(path: ReplacementPaths(plugin: f.plugin).replacement) == nil)
        let status = try Replacement.status(pluginPath: f.plugin)
        #expect(status.phase == "complete" && status.doneBytes == status.totalBytes)
        _ = consume second
        // Switched over: a new start serves everything without opening the backup.
        let fresh = try f.image()
        let third = try Materializer.open(plugin: fresh, options: ReplacementFixture.options())
        #expect(third.isComplete)
        #expect(firstDifference(try third.read(at: 0, count: stream.count), stream) == nil)
        #expect(!fresh.backupOpened, "after the switch-over the backup is never opened")
        #expect(third.servedFromBackup == 0)
    }

    @Test func aJournalWithoutItsReplacementStartsOver() throws {
        let f = try ReplacementFixture()
        try Materializer.open(plugin: f.image(), options: ReplacementFixture.options(stopAfter: 512 << 10)).run()
        unlink(ReplacementPaths(plugin: f.plugin).replacement)
        let m = try Materializer.open(plugin: f.image(), options: ReplacementFixture.options())
        #expect(m.filledChunks == 0)
        #expect(firstDifference(try m.read(at: 0, count: Int(m.size)), try f.stream()) == nil)
    }

    @Test func servedBytesAreTheStreamWhicheverPathServesThem() throws {
        let f = try ReplacementFixture()
        let stream = try f.stream()
        let image = try f.image()
        do {
            // Half filled: the skeleton and the first MiB of payload.
            let m = try Materializer.open(plugin: image, options: ReplacementFixture.options(stopAfter: image.payloadStart + (1 << 20)))
            try m.run()
            var rng = Bytes(seed: 99)
            for _ in 0..<300 {
                let off = Int(rng.next() % UInt64(stream.count))
                let n = Int(min(UInt64(stream.count - off), 1 + rng.next() % (300 << 10)))
                let got = try m.read(at: UInt64(off), count: n)
                #expect(got == Array(stream[off..<(off + n)]), "range \(off)+\(n)")
            }
            #expect(m.servedFromReplacement > 0)
            #expect(m.servedFromBackup > 0)
        }
        // A read of a range not yet filled moves it to the front of the queue.
        let m = try Materializer.open(plugin: f.image(), options: ReplacementFixture.options())
        let last = m.chunkCount - 2
        #expect(m.state.withLock { $0.digests[last] == nil })
        _ = try m.read(at: UInt64(last) * m.chunkSize, count: 10)
        #expect(m.nextBatchForTesting().first == last)
    }

    @Test func aJournalOfAnotherPluginIsRefused() throws {
        let f = try ReplacementFixture()
        try Materializer.open(plugin: f.image(), options: ReplacementFixture.options(stopAfter: 64 << 10)).run()
        // Re-expose with another block size: another plugin at the same path.
        var e = PluginFile.ExposeOptions()
        e.composer.bootCode = [UInt8](repeating: 0xB0, count: 440)
        e.blockSize = 2 << 20
        e.passphrase = .bytes(Array("pw".utf8))
        try PluginFile.expose(backupPath: f.s.file("plug/vm.bli"), pluginPath: f.plugin, options: e)
        #expect(throws: ReplacementError.otherPlugin(journal: ReplacementPaths(plugin: f.plugin).journal)) {
            _ = try Materializer.open(plugin: f.image(), options: ReplacementFixture.options())
        }
        var o = ReplacementFixture.options()
        o.restart = true
        let m = try Materializer.open(plugin: f.image(), options: o)
        #expect(m.filledChunks == 0)
    }

    @Test func aTornJournalTailIsDropped() throws {
        let f = try ReplacementFixture()
        try Materializer.open(plugin: f.image(), options: ReplacementFixture.options(stopAfter: 256 << 10)).run()
        let j = ReplacementPaths(plugin: f.plugin).journal
        let size = try f.image().size
        let before = try FillJournal.read(path: j, fileSize: size)
        // The chunk table is allocated by the header's file size only once it is the plugin's:
        // a journal claiming another size (here 2^63 bytes, 2^43 chunks) is refused, not allocated.
        var huge = try [UInt8](Data(contentsOf: URL(fileURLWithPath: j)).prefix(FillJournal.headerLength))
        huge.replaceSubrange(16..<24, with: withUnsafeBytes(of: (UInt64(1) << 63).littleEndian, Array.init))
        huge.replaceSubrange(56..<60, with: withUnsafeBytes(of: CRC32.checksum(Array(huge[0..<56])).littleEndian, Array.init))
        do {
            _ = try FillJournal.replay(huge, path: "huge", fileSize: size)
            Issue.record("a journal for another file size was replayed")
        } catch let e as FormatError {
            #expect("\(e)".contains("file size 9223372036854775808"), "\(e)")
        }
        let h = FileHandle(forWritingAtPath: j)!
        h.seekToEndOfFile()
        h.write(Data(FillJournal.encode(.init(kind: .filled, chunk: 40, digest: [UInt8](repeating: 1, count: 32))).prefix(30)))
        h.closeFile()
        let torn = try FillJournal.read(path: j, fileSize: size)
        #expect(torn.tornBytes == 30 && torn.digests == before.digests)
        let m = try Materializer.open(plugin: f.image(), options: ReplacementFixture.options())
        #expect(m.filledChunks == before.filledCount)
        #expect(try FillJournal.read(path: j, fileSize: size).tornBytes == 0)
    }

    @Test func finalizeAppliesTheOverlayMarksThePointerAndKeepsTheOldPlugin() throws {
        let f = try ReplacementFixture()
        let paths = ReplacementPaths(plugin: f.plugin)
        let stream = try f.stream()
        // Writes taken while serving: an overlay over the served file, as `mount --writable` keeps it.
        do {
            let overlay = try WriteOverlay(base: f.image(), path: paths.defaultOverlay)
            try Array("guest wrote this".utf8).withUnsafeBytes { try overlay.write(at: 5 << 20, from: $0) }
            try overlay.flush()
        }
        #expect(throws: ReplacementError.self) { _ = try Replacement.finalize(pluginPath: f.plugin) }
        try Materializer.open(plugin: f.image(), options: ReplacementFixture.options()).run()
        let report = try Replacement.finalize(pluginPath: f.plugin)
        #expect(report.switched && report.overlayBytes == UInt64(WriteOverlay.defaultUnitSize))
        let final = try RawFile(path: f.plugin)
        var expected = stream
        expected.replaceSubrange((5 << 20)..<((5 << 20) + 16), with: Array("guest wrote this".utf8))
        var got = try final.read(at: 0, count: Int(final.size))
        // The only other difference: the pointer's magic, marked materialized.
        let at = try #require(Replacement.find(Replacement.materializedMagic, in: got, from: 0))
        #expect(Array(expected[at..<(at + 8)]) == PluginPointer.magic)
        got.replaceSubrange(at..<(at + 8), with: PluginPointer.magic)
        #expect(got == expected)
        #expect(!PluginFile.isPlugin(path: f.plugin))
        #expect(PluginFile.isPlugin(path: paths.oldPlugin))
        #expect(try DiskFormatRegistry.detect(path: f.plugin)?.name == VHDXView.formatName)
        #expect(access(paths.defaultOverlay, F_OK) != 0 && access(paths.oldPlugin + ".overlay", F_OK) == 0)
        #expect(try Replacement.status(pluginPath: f.plugin).phase == "finalized")
        // Again: nothing left to do.
        #expect(try Replacement.finalize(pluginPath: f.plugin).switched == false)
        try Replacement.dropOldPlugin(pluginPath: f.plugin)
        #expect(access(paths.oldPlugin, F_OK) != 0)
    }

    /// `zero` leaves a hole a hole (no block allocated, nothing read) and zeroes bytes that
    /// are not zero (a chunk written before a crash, then found all-zero in the stream).
    @Test func zeroKeepsHolesAndClearsWrittenBytes() throws {
        let s = Scratch()
        let f = try PosixDurableFile(path: s.file("z"), create: true)
        try f.truncate(to: 8 << 20)
        try f.zero(at: 1 << 20, count: 1 << 20)
        try f.sync()
        var st = stat()
        #expect(stat(s.file("z"), &st) == 0)
        #expect(st.st_blocks == 0, "zeroing a hole allocated \(st.st_blocks) blocks")
        try f.write(at: (3 << 20) + 5000, [1, 2, 3])
        try f.zero(at: 3 << 20, count: 1 << 20)
        try f.zero(at: 2 << 20, count: 2 << 20)
        #expect(try f.read(at: 0, count: 8 << 20).allSatisfy { $0 == 0 })
    }

    @Test func theBackupIsNeverWritten() throws {
        let f = try ReplacementFixture()
        let before = try SHA256.hash(RawFile(path: f.s.file("plug/vm.bli")))
        try Materializer.open(plugin: f.image(), options: ReplacementFixture.options()).run()
        _ = try Replacement.finalize(pluginPath: f.plugin)
        #expect(try SHA256.hash(RawFile(path: f.s.file("plug/vm.bli"))) == before)
    }
}
