import Testing
import Foundation
import TestSupport
import Processes
@testable import BackupImage
@testable import BlockCore
@testable import DiskFormats
@testable import Exposure

private func deterministicBytes(_ n: Int, seed: UInt64) -> [UInt8] {
    var b = Bytes(seed: seed)
    return b.bytes(n)
}

private let bootCode = [UInt8](repeating: 0xB0, count: 440)

/// A disk image file: MBR (partition 1 at `start`), then a volume with some data and holes.
private func makeDisk(_ s: Scratch, start: UInt64 = 2048, volumeSize: Int = 6 << 20) throws -> (disk: String, volume: [UInt8]) {
    var volume = [UInt8](repeating: 0, count: volumeSize)
    volume.put(deterministicBytes(1 << 20, seed: 1), at: 0)
    volume.put(deterministicBytes(4096, seed: 2), at: 5 << 20)
    let mbr = MBR(bootCode: bootCode, diskSignature: 0x1234_5678,
                  partitions: [MBR.Partition(type: 0x83, bootable: true, startLBA: UInt32(start), sectorCount: UInt32(volumeSize / 512)), nil, nil, nil])
    let diskSize = start * 512 + UInt64(volumeSize) + (1 << 20)
    let f = try RawFile.create(path: s.file("disk.raw"), size: diskSize)
    try f.write(at: 0, mbr.encode())
    try f.write(at: start * 512, volume)
    try f.flush()
    return (s.file("disk.raw"), volume)
}

private func backup(_ s: Scratch, disk: String, out: String = "plug/vm.bli", partition: Int? = 1, seed: String = "t", encrypt: Bool = false) throws -> String {
    var o = BackupCreateOptions()
    o.partition = partition
    o.imageID = BackupCreateOptions.imageID(seed: seed)
    o.blockSize = 64 << 10
    if encrypt {
        o.encrypt = true
        o.passphrase = .bytes(Array("pw".utf8))
        o.scrypt = .testing
    }
    try? FileManager.default.createDirectory(atPath: s.file("plug"), withIntermediateDirectories: true)
    try? FileManager.default.removeItem(atPath: s.file(out))
    _ = try BackupImageWriter.create(sourcePath: disk, outputPath: s.file(out), options: o)
    return s.file(out)
}

private func exposeOptions(encrypted: Bool = false) -> PluginFile.ExposeOptions {
    var o = PluginFile.ExposeOptions()
    o.composer.bootCode = bootCode
    o.blockSize = 1 << 20
    if encrypted { o.passphrase = .bytes(Array("pw".utf8)) }
    return o
}

@Suite struct PluginFileTests {
    @Test func exposedVHDXHoldsTheOriginalDisk() throws {
        let s = Scratch()
        let (disk, _) = try makeDisk(s)
        let bli = try backup(s, disk: disk, encrypt: true)
        let before = try SHA256.hash(RawFile(path: bli))
        let report = try PluginFile.expose(backupPath: bli, pluginPath: s.file("plug/vm.vhdx"), options: exposeOptions(encrypted: true))
        #expect(report.composition == "volume")
        #expect(report.backupPathInPlugin == "vm.bli", "the pointer is relative to the plugin")

        // The plugin is small on disk (a skeleton + hole) but full-size.
        var st = stat()
        stat(s.file("plug/vm.vhdx"), &st)
        #expect(UInt64(st.st_size) == report.vhdxFileSize)
        #expect(UInt64(st.st_blocks) * 512 <= report.payloadStart + (1 << 20))

        var oo = PluginFile.OpenOptions()
        oo.passphrase = .bytes(Array("pw".utf8))
        let plugin = try PluginFile.open(pluginPath: s.file("plug/vm.vhdx"), options: oo)
        // Deferred open: metadata reads do not open the backup.
        _ = try plugin.read(at: 0, count: Int(plugin.payloadStart))
        #expect(plugin.options.stats.opens == 0)
        #expect(!plugin.backupOpened)

        // Our VHDX reader over the exposed stream returns the original disk, byte for byte.
        let vhdx = try VHDXFile(source: plugin)
        let original = try RawFile(path: disk)
        #expect(vhdx.size == original.size)
        let a = try vhdx.read(at: 0, count: Int(vhdx.size)), b = try original.read(at: 0, count: Int(original.size))
        #expect(a == b)
        #expect(plugin.options.stats.opens == 1)
        #expect(try SHA256.hash(RawFile(path: bli)) == before, "the backup is never written")
    }

    @Test func streamIsDeterministic() throws {
        let s = Scratch()
        let (disk, _) = try makeDisk(s)
        let bli = try backup(s, disk: disk)
        try PluginFile.expose(backupPath: bli, pluginPath: s.file("plug/a.vhdx"), options: exposeOptions())
        try PluginFile.expose(backupPath: bli, pluginPath: s.file("plug/b.vhdx"), options: exposeOptions())
        let a = try PluginFile.open(pluginPath: s.file("plug/a.vhdx")), b = try PluginFile.open(pluginPath: s.file("plug/b.vhdx"))
        #expect(try SHA256.hash(a) == SHA256.hash(b))
    }

    @Test func concurrentFirstReadsOpenTheBackupOnce() throws {
        let s = Scratch()
        let (disk, _) = try makeDisk(s)
        let bli = try backup(s, disk: disk)
        try PluginFile.expose(backupPath: bli, pluginPath: s.file("plug/vm.vhdx"), options: exposeOptions())
        let plugin = try PluginFile.open(pluginPath: s.file("plug/vm.vhdx"))
        let start = plugin.payloadStart
        DispatchQueue.concurrentPerform(iterations: 16) { i in
            _ = try? plugin.read(at: start + UInt64(i) * 65536, count: 65536)
        }
        #expect(plugin.options.stats.opens == 1)
    }

    @Test func replacedBackupIsRefused() throws {
        let s = Scratch()
        let (disk, _) = try makeDisk(s)
        let bli = try backup(s, disk: disk, seed: "one")
        try PluginFile.expose(backupPath: bli, pluginPath: s.file("plug/vm.vhdx"), options: exposeOptions())
        _ = try backup(s, disk: disk, seed: "two")  // same path, another image
        let plugin = try PluginFile.open(pluginPath: s.file("plug/vm.vhdx"))
        _ = try plugin.read(at: 0, count: 4096)  // metadata still served from the plugin
        #expect(throws: PluginFile.PluginError.self) { _ = try plugin.read(at: plugin.payloadStart, count: 4096) }
    }

    @Test func pointerOutsideTheTreeIsRefused() throws {
        let s = Scratch()
        let (disk, _) = try makeDisk(s)
        let bli = try backup(s, disk: disk, out: "elsewhere.bli")
        try FileManager.default.createDirectory(atPath: s.file("plug"), withIntermediateDirectories: true)
        #expect(throws: PluginFile.PluginError.self) {
            try PluginFile.expose(backupPath: bli, pluginPath: s.file("plug/vm.vhdx"), options: exposeOptions())
        }
        var o = exposeOptions()
        o.allowOutside = true
        try PluginFile.expose(backupPath: bli, pluginPath: s.file("plug/vm.vhdx"), options: o)
        #expect(throws: PluginFile.PluginError.self) { _ = try PluginFile.open(pluginPath: s.file("plug/vm.vhdx")) }
        var oo = PluginFile.OpenOptions()
        oo.allowOutside = true
        #expect(try PluginFile.open(pluginPath: s.file("plug/vm.vhdx"), options: oo).size > 0)
    }

    @Test func relocatedFATVolumeGetsItsHiddenSectorsPatched() throws {
        let s = Scratch()
        // A real FAT32 file system made by mkfs.fat, as if it sat at LBA 63.
        let vol = s.file("vol.raw")
        _ = try RawFile.create(path: vol, size: 40 << 20)
        let mkfs = try Command(["/sbin/mkfs.fat", "-F", "32", "-h", "63", "-i", "12345678", vol], stdout: .null, stderr: .inherit).run(check: false)
        try #require(mkfs.termination == .exited(0))
        let bli = try backup(s, disk: vol, partition: nil)
        let o = exposeOptionsAt(2048)
        let r = try PluginFile.expose(backupPath: bli, pluginPath: s.file("plug/vm.vhdx"), options: o)
        #expect(r.patchedBytes == 8, "primary and backup boot sector")
        let disk = try PluginFile.open(pluginPath: s.file("plug/vm.vhdx")).virtualDisk()
        #expect(try disk.read(at: 2048 * 512 + 0x1C, count: 4) == [0x00, 0x08, 0, 0])
        #expect(try disk.read(at: (2048 + 6) * 512 + 0x1C, count: 4) == [0x00, 0x08, 0, 0])
        let mbr = try MBR.parse(disk.read(at: 0, count: 512))
        #expect(mbr.partitions[0]?.startLBA == 2048)
        #expect(mbr.partitions[0]?.type == 0x0C || mbr.partitions[0]?.type == 0x83)
        // The backup itself still says 63.
        let reader = try BackupImageReader.open(path: bli)
        #expect(try reader.read(at: 0x1C, count: 4) == [63, 0, 0, 0])
    }

    private func exposeOptionsAt(_ lba: UInt64) -> PluginFile.ExposeOptions {
        var o = exposeOptions()
        o.composer.partitionStartLBA = lba
        return o
    }
}
