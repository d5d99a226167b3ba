import Testing
import Foundation
@testable import BackupImage
@testable import BlockCore
@testable import DiskFormats
@testable import Exposure
import TestSupport

/// The rule of docs/formats/plugin-file.md ("Versions"): the current version round-trips; a
/// version this release does not read is refused with an error that says how to re-expose.
private let versionBootCode = [UInt8](repeating: 0xB0, count: 440)

/// A volume-only backup of a small disk (image ID from `seed`), exposed as `plug/vm.vhdx`.
private func exposedPlugin(_ s: Scratch, seed: String = "version") throws -> String {
    var volume = [UInt8](repeating: 0, count: 2 << 20)
    var rng = Bytes(seed: 11)
    volume.put(rng.bytes(64 << 10), at: 0)
    let mbr = MBR(bootCode: versionBootCode, diskSignature: 0x0BAD_CAFE,
                  partitions: [MBR.Partition(type: 0x83, bootable: true, startLBA: 2048, sectorCount: UInt32(volume.count / 512)), nil, nil, nil])
    let disk = s.file("disk.raw")
    let f = try RawFile.create(path: disk, size: 2048 * 512 + UInt64(volume.count))
    try f.write(at: 0, mbr.encode())
    try f.write(at: 2048 * 512, volume)
    try f.flush()
    var b = BackupCreateOptions()
    b.partition = 1
    b.imageID = BackupCreateOptions.imageID(seed: seed)
    b.blockSize = 64 << 10
    try FileManager.default.createDirectory(atPath: s.file("plug"), withIntermediateDirectories: true)
    try? FileManager.default.removeItem(atPath: s.file("plug/vm.bli"))
    _ = try BackupImageWriter.create(sourcePath: disk, outputPath: s.file("plug/vm.bli"), options: b)
    var o = PluginFile.ExposeOptions()
    o.composer.bootCode = versionBootCode
    o.blockSize = 1 << 20
    try PluginFile.expose(backupPath: s.file("plug/vm.bli"), pluginPath: s.file("plug/vm.vhdx"), options: o)
    return s.file("plug/vm.vhdx")
}

@Suite struct PluginPointerVersionTests {

    /// Rewrites the plugin's pointer item in place as if a later release had written it: the
    /// JSON's version digit changes (same length) and the item's CRC-32C is recomputed, so the
    /// VHDX and the pointer framing stay valid and only the version is new.
    private func markAsLaterVersion(_ plugin: String, version: Int) throws {
        let file = try RawFile(path: plugin, writable: true)
        let skeleton = try file.read(at: 0, count: Int(min(file.size, 4 << 20)))
        let magic = PluginPointer.magic
        let at = try #require(skeleton.indices.first { i in i + magic.count <= skeleton.count && Array(skeleton[i..<i + magic.count]) == magic })
        let n = Int(skeleton.le32(at + 8))
        var json = Array(skeleton[(at + 16)..<(at + 16 + n)])
        let old = Array("\"version\":\(PluginPointer.backupImageVersion)".utf8), new = Array("\"version\":\(version)".utf8)
        #expect(old.count == new.count)
        let v = try #require(json.indices.first { i in i + old.count <= json.count && Array(json[i..<i + old.count]) == old })
        json.replaceSubrange(v..<v + old.count, with: new)
        var crc: [UInt8] = []
        crc.appendLE32(CRC32C.checksum(json))
        try file.write(at: UInt64(at + 12), crc)
        try file.write(at: UInt64(at + 16), json)
        try file.flush()
    }

    @Test func theCurrentVersionRoundTrips() throws {
        let s = Scratch()
        let plugin = try exposedPlugin(s)
        let (pointer, _) = try PluginPointer.read(pluginPath: plugin)
        // A .bli backup's pointer is still version 1 (version 2 adds an external `source`).
        #expect(pointer.version == PluginPointer.backupImageVersion)
        #expect(PluginPointer.readableVersions.contains(PluginPointer.currentVersion))
        // Bytes → pointer → bytes → pointer: nothing lost, nothing reordered.
        let bytes = try pointer.encode()
        let again = try PluginPointer.decode(bytes)
        #expect(again == pointer)
        #expect(try again.encode() == bytes)
        // And the written plugin opens and serves its payload with it.
        let disk = try PluginFile.open(pluginPath: plugin)
        #expect(disk.pointer == pointer)
        _ = try disk.read(at: disk.payloadStart, count: 4096)
    }

    @Test func aLaterVersionIsRefusedWithHowToReExpose() throws {
        var pointer = PluginPointer(backupPath: "vm.bli", backupImageID: "id", backupHeaderDigest: "00",
                                    composition: .init(kind: "disk", diskSize: 1 << 20),
                                    vhdx: .init(blockSize: 1 << 20, logicalSectorSize: 512, physicalSectorSize: 512,
                                                seedHex: "00", fileSize: 0, payloadStart: 0))
        pointer.version = PluginPointer.readableVersions.upperBound + 1
        let bytes = try pointer.encode()
        #expect { _ = try PluginPointer.decode(bytes, plugin: "/plug/vm.vhdx") } throws: { e in
            guard let v = e as? PluginPointer.VersionError else { return false }
            let text = "\(v)"
            return v.found == pointer.version && v.plugin == "/plug/vm.vhdx"
                && text.contains("version \(pointer.version)")
                && text.contains("re-expose the backup")
                && text.contains("bootlab expose /plug/vm.bli --out /plug/vm.vhdx")
        }
    }

    @Test func aPluginOfALaterVersionIsRefusedWhereverItIsOpened() throws {
        let s = Scratch()
        let plugin = try exposedPlugin(s)
        try markAsLaterVersion(plugin, version: PluginPointer.currentVersion + 1)
        // Still a valid VHDX for tools that never see the filter.
        _ = try VHDXFile.open(path: plugin)
        // Counted as a plugin (a mount must not pass its hole through), and refused when opened.
        #expect(PluginFile.isPlugin(path: plugin))
        let expected = "bootlab expose \(s.file("plug"))/vm.bli --out \(plugin)"
        #expect { _ = try PluginFile.open(pluginPath: plugin) } throws: { e in
            (e as? PluginPointer.VersionError).map { "\($0)".contains(expected) } ?? false
        }
        #expect(throws: PluginPointer.VersionError.self) { _ = try PluginFile.recognize(path: plugin, options: .init()) }
    }
}

/// Mismatches are typed: they name the structure, the offset where there is one, and the reason.
@Suite struct PluginMismatchTests {
    @Test func anotherBackupAtThePathIsAnImageIDMismatch() throws {
        let s = Scratch()
        let plugin = try exposedPlugin(s, seed: "one")
        let recorded = try PluginFile.open(pluginPath: plugin).pointer.backupImageID
        // The same disk backed up again under another image ID, at the path the pointer names.
        var b = BackupCreateOptions()
        b.partition = 1
        b.imageID = BackupCreateOptions.imageID(seed: "two")
        b.blockSize = 64 << 10
        try FileManager.default.removeItem(atPath: s.file("plug/vm.bli"))
        _ = try BackupImageWriter.create(sourcePath: s.file("disk.raw"), outputPath: s.file("plug/vm.bli"), options: b)
        let disk = try PluginFile.open(pluginPath: plugin)
        #expect { _ = try disk.read(at: disk.payloadStart, count: 4096) } throws: { e in
            guard case .mismatch(.imageID(let r, let found))? = e as? PluginFile.PluginError else { return false }
            return r == recorded && found == b.imageID!.description && "\(e)".contains("backup header")
        }
    }

    @Test func aChangedSkeletonByteIsNamedByItsOffset() throws {
        let s = Scratch()
        let plugin = try exposedPlugin(s)
        // A byte of the (empty, unreferenced) log region: the VHDX still parses, but the skeleton
        // is no longer the one the backup renders.
        let at: UInt64 = (1 << 20) + 100
        let f = try RawFile(path: plugin, writable: true)
        try f.write(at: at, [try f.read(at: at, count: 1)[0] ^ 0xFF])
        try f.flush()
        let disk = try PluginFile.open(pluginPath: plugin)
        #expect { _ = try disk.read(at: disk.payloadStart, count: 4096) } throws: { e in
            guard case .mismatch(.skeletonBytes(_, let offset))? = e as? PluginFile.PluginError else { return false }
            return offset == at && "\(e)".contains("VHDX skeleton at 0x100064")
        }
    }
}
