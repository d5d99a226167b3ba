import Testing
import Foundation
import TestSupport
@testable import BlockCore
@testable import DiskFormats
@testable import Exposure

/// Finalize for every native format a plugin can have (docs/replacement-file.md "Finalize"): the
/// pointer is retired where the format keeps it, the identifying bytes are written last, and the
/// result is the stream with only the retirement edits applied. External tools cross-check the
/// same files in ci/test.d/65-materialize.sh (qemu-img check/info/compare, cmp against convert).
@Suite struct ReplacementFormatsTests {
    static let cases: [(String, [String: String])] = [
        ("vhdx", [:]), ("vmdk", [:]), ("qcow2", [:]), ("vdi", [:]),
        ("vhd", ["subformat": "dynamic"]), ("vhd", ["subformat": "fixed"]),
    ]

    @Test(arguments: 0..<cases.count)
    func finalizeRetiresThePointerWhereTheFormatKeepsIt(_ index: Int) throws {
        let (format, keys) = Self.cases[index]
        let f = try ReplacementFixture(format: format, formatKeys: keys)
        let paths = ReplacementPaths(plugin: f.plugin)
        let stream = try f.stream()
        let driver = try #require(DiskFormatRegistry.driver(named: format))
        let virtual = try f.image().virtualDisk()
        let virtualBytes = try virtual.read(at: 0, count: Int(virtual.size))
        // A fixed VHD plugin's sidecar pointer; nothing for the others.
        let companions = driver.pluginCompanionSuffixes.filter { access(f.plugin + $0, F_OK) == 0 }
        #expect(companions.isEmpty == (keys["subformat"] != "fixed"))

        // Half filled: the replacement is no file of the format (its identifying bytes are zero).
        try Materializer.open(plugin: f.image(), options: ReplacementFixture.options(stopAfter: 1 << 20)).run()
        #expect(try DiskFormatRegistry.detect(path: paths.replacement) == nil, "a half-filled \(format) replacement must not be detected")
        try Materializer.open(plugin: f.image(), options: ReplacementFixture.options()).run()
        #expect(try DiskFormatRegistry.detect(path: paths.replacement) == nil)

        let edits = try Replacement.retirementEdits(driver: driver, pluginFile: f.plugin)
        #expect(edits.count == 1)
        _ = try Replacement.finalize(pluginPath: f.plugin, options: f.options)

        // The stream, except the retirement edits.
        var expected = stream
        for e in edits {
            #expect(Array(expected[Int(e.offset)..<Int(e.offset) + e.old.count]) == e.old)
            expected.replaceSubrange(Int(e.offset)..<Int(e.offset) + e.new.count, with: e.new)
        }
        let final = try RawFile(path: f.plugin)
        #expect(try final.read(at: 0, count: Int(final.size)) == expected)
        #expect(try DiskFormatRegistry.detect(path: f.plugin)?.name == format)
        #expect(!PluginFile.isPlugin(path: f.plugin))
        #expect(PluginFile.isPlugin(path: paths.oldPlugin), "the old plugin (with its companions) still works")
        #expect(try driver.check(path: f.plugin).exitCode == 0)
        // The format's own reader sees the plugin's virtual disk.
        let native = try driver.open(path: f.plugin)
        #expect(native.size == virtual.size)
        #expect(try native.read(at: 0, count: Int(native.size)) == virtualBytes)
        #expect(try Replacement.status(pluginPath: f.plugin).phase == "finalized")
        for suffix in companions {
            #expect(access(f.plugin + suffix, F_OK) != 0 && access(paths.oldPlugin + suffix, F_OK) == 0)
        }

        // convert's copy of the plugin (kept as P.plugin), marked the same way, is the same file.
        let copy = f.s.file("copy.\(format)")
        let old = try PluginFile.open(pluginPath: paths.oldPlugin, options: f.options)
        _ = try SparseImageWriter.write(old, toPath: copy, options: SparseImageWriter.Options(threads: 1, sync: false))
        #expect(try Replacement.markMaterialized(path: copy) == 1)
        #expect(try RawFile(path: copy).read(at: 0, count: Int(final.size)) == expected)
        #expect(!PluginFile.isPlugin(path: copy))

        try Replacement.dropOldPlugin(pluginPath: f.plugin)
        for suffix in [""] + driver.pluginCompanionSuffixes { #expect(access(paths.oldPlugin + suffix, F_OK) != 0) }
    }
}
