import Testing
import Foundation
import TestSupport
@testable import BlockCore
@testable import DiskFormats
@testable import Exposure
#if canImport(Glibc)
import Glibc
#endif

/// The finalize of a plugin served writable, in the serving process (`mount --writable
/// --materialize --finalize`, docs/replacement-file.md): the served source is switched from the
/// write overlay to the native file while writers keep writing; no acknowledged write is lost,
/// every one is in the native file, and those after the switch go straight to it.
@Suite struct WritableSwitchOverTests {
    /// One writer thread writing numbered 4 KiB records to 32 slots (32 others once it sees the
    /// switch) while the finalize runs on another: every acknowledged record (the last one per
    /// slot) is in the native file, read back through the same source after the switch, and
    /// records written after the switch reach `P` with no overlay in between. (Checked by hand:
    /// with the write gate removed from `SwitchingSource.write`, writes taken between the build
    /// and the switch are missing from `P`.)
    @Test func writersKeepWritingAcrossTheSwitchAndLoseNothing() throws {
        let f = try ReplacementFixture()
        let paths = ReplacementPaths(plugin: f.plugin)
        let stream = try f.stream()
        let image = try f.image()
        let m = try Materializer.open(plugin: image, options: ReplacementFixture.options())
        let live = WritableSwitchOver(materializer: m, overlayPath: paths.defaultOverlay)
        let limit = image.size + (8 << 20)
        let served = try live.open(maxSize: limit) {
            try WriteOverlay(base: m, path: paths.defaultOverlay, maxSize: limit)
        }
        let source = try #require(served as? SwitchingSource)
        #expect((try live.open(maxSize: limit) { fatalError("opened twice") } as? SwitchingSource) === source)

        // Mid-fill: a write before the fill completes (the overlay takes it).
        var model = stream
        let early = Array(repeating: UInt8(0xE1), count: 10_000)
        try early.withUnsafeBytes { try source.write(at: image.payloadStart + 4096, from: $0) }
        model.replaceSubrange(Int(image.payloadStart + 4096)..<Int(image.payloadStart + 4096 + 10_000), with: early)
        try m.run()
        #expect(m.isComplete)

        // A writer runs across the finalize.
        let slots = 32, record = 4096
        let base = image.payloadStart + (1 << 20)
        let acknowledged = Locked<[Int: [UInt8]]>([:])
        let afterSwitch = Locked(0)
        let stop = Locked(false)
        let failure = Locked<String?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread {
            // Until told to stop, then 50 more (after the switch: stop comes after finalize).
            var seq = 0, extra = 0
            while extra < 50 {
                if stop.current { extra += 1 }
                // Before the switch to slots 0..<32, after it to 32..<64: a later write never
                // hides an earlier one that went missing.
                let wasSwitched = source.switched
                let slot = seq % slots + (wasSwitched ? slots : 0)
                var rec = [UInt8](repeating: UInt8(truncatingIfNeeded: seq), count: record)
                rec.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(seq).littleEndian, Array.init))
                do {
                    try rec.withUnsafeBytes { try source.write(at: base + UInt64(slot * record), from: $0) }
                } catch {
                    failure.withLock { $0 = "write \(seq): \(error)" }
                    break
                }
                acknowledged.withLock { $0[slot] = rec }
                if wasSwitched { afterSwitch.withLock { $0 += 1 } }
                seq += 1
            }
            done.signal()
        }.start()
        usleep(20_000)
        let outcome = Result { try live.finalize() }
        stop.withLock { $0 = true }
        done.wait()
        let report = try outcome.get()
        #expect(failure.current == nil)
        #expect(afterSwitch.current >= 50)
        #expect(report.switched && report.overlayBytes > 0)
        #expect(source.switched)
        #expect(try live.finalize() == report, "finalize twice: the first report")

        for (slot, rec) in acknowledged.current {
            let at = Int(base) + slot * record
            model.replaceSubrange(at..<(at + record), with: rec)
        }
        // Growth after the switch: the native file takes it.
        let tail = Array(repeating: UInt8(0x7A), count: 5000)
        try tail.withUnsafeBytes { try source.writeExtending(at: image.size + 100, from: $0) }
        model += [UInt8](repeating: 0, count: 100) + tail
        try source.flush()

        // Read back through the same source, and from `P` with no filter: the model, but the
        // pointer's magic (marked materialized).
        var native = try RawFile(path: f.plugin).read(at: 0, count: model.count)
        #expect(try RawFile(path: f.plugin).size == UInt64(model.count))
        #expect(try source.read(at: 0, count: model.count) == native, "the served source after the switch is not the native file")
        let at = try #require(Replacement.find(Replacement.materializedMagic, in: native, from: 0))
        native.replaceSubrange(at..<(at + 8), with: PluginPointer.magic)
        #expect(firstDifference(native, model) == nil)
        #expect(!PluginFile.isPlugin(path: f.plugin) && PluginFile.isPlugin(path: paths.oldPlugin))
        #expect(try DiskFormatRegistry.detect(path: f.plugin)?.name == VHDXView.formatName)
        #expect(access(paths.defaultOverlay + ".map", F_OK) != 0 && access(paths.oldPlugin + ".overlay.map", F_OK) == 0)
        // The overlay, moved aside, holds nothing written after the switch.
        let old = try WriteOverlay(base: m, path: paths.oldPlugin + ".overlay", maxSize: OverlayJournal.maxLimit, readOnly: true)
        #expect(old.size == image.size, "the growth after the switch went to the overlay")
        // Opened again after the finalize: the same (switched) source.
        let reopened = try live.open(maxSize: limit) { fatalError("the stack must not open after finalize") }
        #expect((reopened as? SwitchingSource) === source)
    }

    /// Finalize before any front-end opened the file (a restart after a crash inside an earlier
    /// finalize): the overlay's files are applied, and a later open serves the native file.
    @Test func aFinalizeBeforeTheFirstOpenAppliesTheOverlayFiles() throws {
        let f = try ReplacementFixture()
        let paths = ReplacementPaths(plugin: f.plugin)
        var model = try f.stream()
        let image = try f.image()
        do {
            let overlay = try WriteOverlay(base: image, path: paths.defaultOverlay)
            try Array("acknowledged before the crash".utf8).withUnsafeBytes { try overlay.write(at: 5 << 20, from: $0) }
        }
        model.replaceSubrange((5 << 20)..<((5 << 20) + 29), with: Array("acknowledged before the crash".utf8))
        let m = try Materializer.open(plugin: image, options: ReplacementFixture.options())
        try m.run()
        let live = WritableSwitchOver(materializer: m, overlayPath: paths.defaultOverlay)
        let report = try live.finalize()
        #expect(report.switched && report.overlayBytes == UInt64(WriteOverlay.defaultUnitSize))
        let served = try live.open(maxSize: nil) { fatalError("the stack must not open after finalize") }
        #expect(served is NativeFileSource)
        var got = try served.read(at: 0, count: model.count)
        let at = try #require(Replacement.find(Replacement.materializedMagic, in: got, from: 0))
        got.replaceSubrange(at..<(at + 8), with: PluginPointer.magic)
        #expect(firstDifference(got, model) == nil)
    }
}
