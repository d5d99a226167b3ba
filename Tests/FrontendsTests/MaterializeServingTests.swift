import Testing
import Foundation
import TestSupport
@testable import BackupImage
@testable import BlockCore
@testable import Exposure
@testable import Frontends

/// `mount --materialize` below FUSE: the front-end's opener serves the plugin through its
/// materializer, writes land in the overlay (never in the replacement, never in the backup), and
/// the served bytes are the plugin's whichever path serves them.
@Suite struct MaterializeServingTests {
    @Test func theOpenerServesThroughTheMaterializerAndWritesGoToTheOverlay() throws {
        let dir = Scratch()
        _ = try makeDisk(dir.file("disk.raw"), seed: 13)
        let back = dir.dir("back")
        var o = BackupCreateOptions()
        o.imageID = BackupCreateOptions.imageID(seed: "materialize-serving")
        o.blockSize = 64 << 10
        _ = try BackupImageWriter.create(sourcePath: dir.file("disk.raw"), outputPath: back + "/vm.bli", options: o)
        var e = PluginFile.ExposeOptions()
        e.blockSize = 1 << 20
        try PluginFile.expose(backupPath: back + "/vm.bli", pluginPath: back + "/vm.vhdx", options: e)
        let backupDigest = try SHA256.hash(RawFile(path: back + "/vm.bli"))
        let plugin = try #require(try PluginFile.recognize(path: back + "/vm.vhdx", options: .init()))
        let stream = try plugin.read(at: 0, count: Int(plugin.size))

        var mo = Materializer.Options()
        mo.chunkSize = 64 << 10
        mo.writeStatusFile = false
        let set = MaterializerSet(options: mo, writable: true)
        let m = try #require(try set.materializer(for: plugin))
        #expect(try set.materializer(for: plugin) === m, "one fill per plugin")
        m.wait()
        #expect(m.isComplete, "\(m.lastError ?? "")")

        let paths = ReplacementPaths(plugin: back + "/vm.vhdx")
        let replacementBefore = try SHA256.hash(RawFile(path: paths.replacement))
        let spec = SourceSpec(path: back + "/vm.vhdx", overlayPath: paths.defaultOverlay)
        let file = SourceOpener.prepare(plugin: plugin, spec: spec, counters: SourceCounters(name: "vm.vhdx"), materializer: m)
        let served = try #require(try file.open() as? any WritableBlockSource)
        let got = try served.read(at: 0, count: stream.count)
        #expect(firstDifference(got, stream) == nil)
        let at = plugin.payloadStart + 12345
        try Array("a guest write".utf8).withUnsafeBytes { try served.write(at: at, from: $0) }
        try served.flush()
        #expect(try served.read(at: at, count: 13) == Array("a guest write".utf8))
        #expect(try SHA256.hash(RawFile(path: paths.replacement)) == replacementBefore, "the replacement takes no guest writes before finalize")
        #expect(m.servedFromReplacement > 0)
        #expect(set.statuses.first?.phase == "complete")

        // A writable front-end keeps the lock: finalize waits until it stops.
        #expect(throws: ReplacementError.busy(journal: paths.journal)) { _ = try Replacement.finalize(pluginPath: back + "/vm.vhdx") }
        #expect(try SHA256.hash(RawFile(path: back + "/vm.bli")) == backupDigest)
    }
}
