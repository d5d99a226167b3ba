import Testing
import Foundation
import TestSupport
import Processes
@testable import BackupImage
@testable import BlockCore
@testable import DiskFormats
@testable import Exposure

private let bootCode = [UInt8](repeating: 0xB0, count: 440)
private let start: UInt64 = 2048

/// A disk whose volume has data at 0 (1 MiB) and at 5 MiB (4 KiB); the rest is zero, so the
/// exposed VHDX leaves most 1 MiB blocks unallocated.
private func makeBackup(_ s: Scratch) throws -> (bli: String, disk: String) {
    var rng = Bytes(seed: 7)
    var volume = [UInt8](repeating: 0, count: 6 << 20)
    volume.put(rng.bytes(1 << 20), at: 0)
    volume.put(rng.bytes(4096), at: 5 << 20)
    let mbr = MBR(bootCode: bootCode, diskSignature: 0x1234_5678,
                  partitions: [MBR.Partition(type: 0x83, bootable: true, startLBA: UInt32(start), sectorCount: UInt32(volume.count / 512)), nil, nil, nil])
    let disk = s.file("disk.raw")
    let f = try RawFile.create(path: disk, size: start * 512 + UInt64(volume.count) + (1 << 20))
    try f.write(at: 0, mbr.encode())
    try f.write(at: start * 512, volume)
    try f.flush()
    var o = BackupCreateOptions()
    o.partition = 1
    o.imageID = BackupCreateOptions.imageID(seed: "reconf")
    o.blockSize = 64 << 10
    try FileManager.default.createDirectory(atPath: s.file("plug"), withIntermediateDirectories: true)
    _ = try BackupImageWriter.create(sourcePath: disk, outputPath: s.file("plug/vm.bli"), options: o)
    return (s.file("plug/vm.bli"), disk)
}

private func expose(_ s: Scratch, _ bli: String) throws -> PluginFile.ExposeReport {
    var o = PluginFile.ExposeOptions()
    o.composer.bootCode = bootCode
    o.blockSize = 1 << 20
    return try PluginFile.expose(backupPath: bli, pluginPath: s.file("plug/vm.vhdx"), options: o)
}

/// Where the "engine" writes: a 4 KiB unit inside a zero 1 MiB block of the volume (so the
/// layer turns an unallocated VHDX block into data), and one over existing data.
private let editInHole: UInt64 = start * 512 + (3 << 20) + 8192
private let editOverData: UInt64 = start * 512 + 4096

private func edit(_ layer: ReconfigurationLayerWriter) throws -> [UInt8] {
    var rng = Bytes(seed: 99)
    let a = rng.bytes(4096), b = rng.bytes(4096)
    try a.withUnsafeBytes { try layer.write(at: editInHole, from: $0) }
    try b.withUnsafeBytes { try layer.write(at: editOverData, from: $0) }
    try layer.flush()
    return a + b
}

private func run(_ argv: [String]) throws -> (status: Int32, out: String) {
    let r = try Command(argv, stderr: .stdout).run(check: false)
    return (r.termination.status, r.stdoutText)
}

@Suite struct ReconfigurationLayerTests {
    @Test func layerSitsBetweenComposedDiskAndVHDXView() throws {
        let s = Scratch()
        let (bli, disk) = try makeBackup(s)
        let backupDigest = try SHA256.hash(RawFile(path: bli))
        let exposed = try expose(s, bli)

        let layer = try PluginFile.openReconfigurationLayer(pluginPath: s.file("plug/vm.vhdx"))
        // The engine's contract: only what the layer holds is data; the rest falls through.
        #expect(try layer.allExtents() == [Extent(offset: 0, length: layer.size, kind: .absent)])
        let bytes = try edit(layer)
        #expect(try layer.extents(in: 0..<layer.size).filter { $0.kind == .data }.map(\.length) == [4096, 4096])

        let record = try PluginFile.recordReconfiguration(pluginPath: s.file("plug/vm.vhdx"), target: "hyperv-gen1")
        #expect(record.pluginRewritten)
        #expect(record.layerBytes == 8192)
        #expect(record.allocatedBlocks == exposed.allocatedBlocks + 1, "the edit in a hole allocates one more VHDX block")

        // The pointer names the layer relative to the plugin, with its digest and target.
        let plugin = try PluginFile.open(pluginPath: s.file("plug/vm.vhdx"))
        let r = try #require(plugin.pointer.reconfiguration)
        #expect(r.layerPath == "vm.vhdx.reconf")
        #expect(r.targets == ["hyperv-gen1"])
        #expect(r.unitSize == 4096)

        // Expected disk: the original with the two edits.
        var expected = try RawFile(path: disk).read(at: 0, count: Int(plugin.virtualSize))
        expected.put(Array(bytes[0..<4096]), at: Int(editInHole))
        expected.put(Array(bytes[4096...]), at: Int(editOverData))

        // --raw (the virtual disk) and the VHDX stream both show the reconfigured disk; opening
        // the stream also checks that the re-rendered skeleton equals the plugin's bytes.
        #expect(try plugin.virtualDisk().read(at: 0, count: Int(plugin.virtualSize)) == expected)
        let vhdx = try VHDXFile(source: plugin)
        #expect(try vhdx.read(at: 0, count: Int(vhdx.size)) == expected)

        // An independent reader agrees: the materialized stream is a valid VHDX holding that disk.
        let streamPath = s.file("stream.vhdx"), expectedPath = s.file("expected.raw")
        let out = try RawFile.create(path: streamPath, size: 0)
        try out.write(at: 0, try plugin.read(at: 0, count: Int(plugin.size)))
        try out.flush()
        let e = try RawFile.create(path: expectedPath, size: 0)
        try e.write(at: 0, expected)
        try e.flush()
        let check = try run(["qemu-img", "check", "-f", "vhdx", streamPath])
        #expect(check.status == 0, "\(check.out)")
        let compare = try run(["qemu-img", "compare", "-f", "vhdx", "-F", "raw", streamPath, expectedPath])
        #expect(compare.status == 0, "\(compare.out)")

        #expect(try SHA256.hash(RawFile(path: bli)) == backupDigest, "the backup is never written")
    }

    @Test func recordingAgainChangesNothing() throws {
        let s = Scratch()
        let (bli, _) = try makeBackup(s)
        _ = try expose(s, bli)
        _ = try edit(try PluginFile.openReconfigurationLayer(pluginPath: s.file("plug/vm.vhdx")))
        try PluginFile.recordReconfiguration(pluginPath: s.file("plug/vm.vhdx"), target: "kvm-virtio")
        let before = try SHA256.hash(RawFile(path: s.file("plug/vm.vhdx")))
        let again = try PluginFile.recordReconfiguration(pluginPath: s.file("plug/vm.vhdx"), target: "kvm-virtio")
        #expect(!again.pluginRewritten)
        #expect(try SHA256.hash(RawFile(path: s.file("plug/vm.vhdx"))) == before)
        // A second target is appended; the layer's bytes are the same, the pointer changes.
        let other = try PluginFile.recordReconfiguration(pluginPath: s.file("plug/vm.vhdx"), target: "vmware-pvscsi")
        #expect(other.pluginRewritten)
        #expect(other.targets == ["kvm-virtio", "vmware-pvscsi"])
    }

    @Test func changedLayerIsRefusedAndReExposeDiscardsIt() throws {
        let s = Scratch()
        let (bli, _) = try makeBackup(s)
        _ = try expose(s, bli)
        _ = try edit(try PluginFile.openReconfigurationLayer(pluginPath: s.file("plug/vm.vhdx")))
        try PluginFile.recordReconfiguration(pluginPath: s.file("plug/vm.vhdx"), target: "hyperv-gen1")

        // Flip one byte of the layer's data behind the pointer's back.
        let data = try RawFile(path: s.file("plug/vm.vhdx.reconf"), writable: true)
        let old = try data.read(at: editInHole, count: 1)
        try data.write(at: editInHole, [old[0] ^ 0xFF])
        try data.flush()
        let plugin = try PluginFile.open(pluginPath: s.file("plug/vm.vhdx"))
        _ = try plugin.read(at: 0, count: 4096)  // metadata comes from the plugin alone
        #expect(throws: PluginFile.PluginError.self) { _ = try plugin.read(at: plugin.payloadStart, count: 4096) }

        // A missing layer is refused the same way.
        try FileManager.default.removeItem(atPath: s.file("plug/vm.vhdx.reconf.map"))
        #expect(throws: PluginFile.PluginError.self) {
            _ = try PluginFile.open(pluginPath: s.file("plug/vm.vhdx")).virtualDisk()
        }

        // Exposing again starts a plugin without a layer (and removes the stale one).
        _ = try expose(s, bli)
        #expect(!FileManager.default.fileExists(atPath: s.file("plug/vm.vhdx.reconf")))
        let fresh = try PluginFile.open(pluginPath: s.file("plug/vm.vhdx"))
        #expect(fresh.pointer.reconfiguration == nil)
        _ = try fresh.read(at: fresh.payloadStart, count: 4096)
    }

    @Test func layerOverAnotherCompositionIsRefused() throws {
        let s = Scratch()
        let (bli, _) = try makeBackup(s)
        _ = try expose(s, bli)
        _ = try edit(try PluginFile.openReconfigurationLayer(pluginPath: s.file("plug/vm.vhdx")))
        // Same backup, volume placed elsewhere: the layer's edits would land in the wrong place.
        let moved = s.file("plug/vm.vhdx.reconf")
        try FileManager.default.moveItem(atPath: moved, toPath: moved + ".keep")
        try FileManager.default.moveItem(atPath: moved + ".map", toPath: moved + ".map.keep")
        var o = PluginFile.ExposeOptions()
        o.composer.bootCode = bootCode
        o.blockSize = 1 << 20
        o.composer.partitionStartLBA = 4096
        try PluginFile.expose(backupPath: bli, pluginPath: s.file("plug/vm.vhdx"), options: o)
        try FileManager.default.moveItem(atPath: moved + ".keep", toPath: moved)
        try FileManager.default.moveItem(atPath: moved + ".map.keep", toPath: moved + ".map")
        #expect(throws: FormatError.self) { _ = try PluginFile.openReconfigurationLayer(pluginPath: s.file("plug/vm.vhdx")) }
    }
}
