import Foundation
import Processes
import Testing
import TestSupport
@testable import BackupImage
@testable import BlockCore
@testable import DiskFormats
@testable import Exposure

/// Why the cross-checks cannot run: sgdisk (gdisk) builds the original disk, qemu-img compares.
private let volumeSetMissing: String? = toolsMissing(["sgdisk", "qemu-img"])

private let diskGUID = "5C4B3A29-1807-4F6E-9D5C-4B3A29180706"
private let espGUID = "0A1B2C3D-4E5F-4607-8819-2A3B4C5D6E7F"
private let rootGUID = "7F6E5D4C-3B2A-4190-8F7E-6D5C4B3A2918"

/// 4096-byte sectors need root (loop devices for sgdisk), libvhdi and FUSE.
private let volumeSet4KMissing: String? = getuid() != 0 ? "not root (4096-byte-sector disks are built through loop devices)"
    : fuseMissing ?? toolsMissing(["sgdisk", "losetup", "qemu-img", "vhdiinfo", "vhdimount", "fusermount3"])

/// Runs `body` with a 4096-byte-sector loop device over `file`.
private func loop4K<T>(_ file: String, _ body: (String) throws -> T) throws -> T {
    let r = try sh(["losetup", "-b", "4096", "-f", "--show", file])
    guard r.status == 0 else { throw VolumeSetTestError(description: "losetup: \(r.out)") }
    let dev = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
    defer { _ = try? sh(["losetup", "-d", dev]) }
    return try body(dev)
}

private struct VolumeSetTestError: Error, CustomStringConvertible { var description: String }

private func sh(_ argv: [String]) throws -> (status: Int32, out: String) {
    let r = try Command(argv, stderr: .stdout).run(check: false)
    return (r.termination.status, r.stdoutText)
}

/// A 32 MiB disk made by sgdisk (not by our writer): an ESP (entry 1, LBA 2048, 8 MiB, name
/// "EFI system partition") and a Linux root (entry 2, LBA 20480, 6 MiB, name "root", attribute
/// bit 2), each filled with distinct data and holes; a gap between them that the backup does
/// not hold stays zero.
private func sgdiskDisk(_ path: String) throws {
    _ = try RawFile.create(path: path, size: 32 << 20)
    let r = try sh(["sgdisk", "-U", diskGUID,
                    "-n", "1:2048:18431", "-t", "1:ef00", "-u", "1:\(espGUID)", "-c", "1:EFI system partition",
                    "-n", "2:20480:32767", "-t", "2:8300", "-u", "2:\(rootGUID)", "-c", "2:root", "-A", "2:set:2", path])
    guard r.status == 0 else { throw VolumeSetTestError(description: "sgdisk: \(r.out)") }
    var rng = Bytes(seed: 1414)
    let f = try RawFile(path: path, writable: true)
    try f.write(at: 2048 * 512, rng.bytes(1 << 20))
    try f.write(at: 2048 * 512 + (8 << 20) - 4096, rng.bytes(4096))
    try f.write(at: 20480 * 512, rng.bytes(512 << 10))
    try f.write(at: 20480 * 512 + (6 << 20) - 8192, rng.bytes(8192))
    try f.flush()
}

/// Backs up partitions 1 and 2 of `disk` as the set `dir/vm.blset` (fixed seed).
private func backupSet(_ disk: String, _ dir: String, seed: String = "volume-set") throws -> BackupSetWriter.Summary {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var o = BackupCreateOptions()
    o.imageID = BackupCreateOptions.imageID(seed: seed)
    o.blockSize = 64 << 10
    return try BackupSetWriter.create(sourcePath: disk, manifestPath: dir + "/vm.blset", partitions: [2, 1], options: o)
}

/// Exposes the set and writes the served native file to `dir/stream.<format>` and the virtual
/// disk to `dir/virtual.raw`.
private func exposeSet(_ dir: String, format: String = "vhdx") throws -> (report: PluginFile.ExposeReport, stream: String, raw: String, pointer: PluginPointer) {
    var o = PluginFile.ExposeOptions()
    o.format = format
    let report = try PluginFile.exposeSet(manifestPath: dir + "/vm.blset", pluginPath: dir + "/vm.\(format)", options: o)
    let served = try writeServedBytes(of: dir + "/vm.\(format)", into: dir, format: format)
    return (report, served.stream, served.raw, served.pointer)
}

/// A volume set (issue 14: "a backup may hold several volumes of one disk … and compose them
/// back into one disk"): two `.bli` images of an sgdisk-made disk plus a manifest, exposed as one
/// GPT disk equal to the original (qemu-img compare), judged clean by `sgdisk -v`, with a
/// version-3 pointer naming both members; a missing or changed member refused.
@Suite(.serialized) struct VolumeSetTests {
    @Test(.requires(missing: volumeSetMissing)) func composedAsTheOriginalDisk() throws {
        let s = Scratch("volume-set-compose")
        let original = s.file("original.raw")
        try sgdiskDisk(original)
        let dir = s.file("plug")
        let set = try backupSet(original, dir)
        #expect(set.volumes.map { ($0.path as NSString).lastPathComponent } == ["vm.p1.bli", "vm.p2.bli"])
        let m = try BackupSetManifest.read(path: dir + "/vm.blset")
        #expect(m.diskGUID == GUID(diskGUID) && m.sectorSize == 512 && m.diskSize == 32 << 20 && m.entryCount == 128)
        #expect(m.volumes.map(\.number) == [1, 2] && m.volumes.map(\.firstLBA) == [2048, 20480])
        #expect(m.volumes[0].typeGUID == GPTPartitionType.efiSystem && m.volumes[0].uniqueGUID == GUID(espGUID))
        #expect(m.volumes[1].name == "root" && m.volumes[1].attributes == 4 && m.volumes[1].size == 6 << 20)
        // Each member is an ordinary volume backup of its partition.
        let h1 = try BackupImageReader.readHeader(path: dir + "/vm.p1.bli").header
        #expect(h1.sourceKind == .volume && h1.partitionNumber == 1 && h1.partitionStartLBA == 2048 && h1.gptDiskGUID == GUID(diskGUID))

        let e = try exposeSet(dir)
        #expect(e.report.composition == "gpt" && e.report.virtualSize == 32 << 20)
        #expect(e.pointer.version == PluginPointer.volumeSetVersion && e.pointer.backupImageID == "set" && e.pointer.backupPath == "vm.blset")
        let members = try #require(e.pointer.backupSet).members
        #expect(members.map(\.backupPath) == ["vm.p1.bli", "vm.p2.bli"])
        #expect(e.pointer.composition.gpt?.partitions.map(\.content) == members.map(\.content))
        // The hypervisor's view of the exposed VHDX equals the original disk, byte for byte.
        let cmp = try sh(["qemu-img", "compare", "-f", "vhdx", "-F", "raw", e.stream, original])
        #expect(cmp.status == 0 && cmp.out.contains("Images are identical"), "\(cmp.out)")
        let v = try sh(["sgdisk", "-v", e.raw]).out
        #expect(v.contains("No problems found"), "\(v)")
        // Another native view over the same stack.
        let q = try exposeSet(dir, format: "qcow2")
        let cq = try sh(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", q.stream, original])
        #expect(cq.status == 0 && cq.out.contains("Images are identical"), "\(cq.out)")
    }

    /// 4096-byte sectors: the same two partitions (ESP at LBA 256, root at 2560) on a disk sgdisk
    /// makes through a `losetup -b 4096` device; the set's manifest says 4096, the VHDX plugin
    /// advertises 4096-byte sectors, and libvhdi's reading of it (QEMU 7.2 refuses 4096-byte VHDX
    /// sectors) equals the original disk; `sgdisk -v` on the composed disk through a 4096-byte
    /// loop device finds no problem.
    @Test(.requires(missing: volumeSet4KMissing)) func fourKibibyteSectors() throws {
        let s = Scratch("volume-set-4k")
        let original = s.file("original.raw")
        _ = try RawFile.create(path: original, size: 32 << 20)
        try loop4K(original) { dev in
            let r = try sh(["sgdisk", "-U", diskGUID, "-n", "1:256:2303", "-t", "1:ef00", "-u", "1:\(espGUID)", "-c", "1:EFI",
                            "-n", "2:2560:4095", "-t", "2:8300", "-u", "2:\(rootGUID)", "-c", "2:root", dev])
            guard r.status == 0 else { throw VolumeSetTestError(description: "sgdisk: \(r.out)") }
        }
        var rng = Bytes(seed: 4096)
        let f = try RawFile(path: original, writable: true)
        try f.write(at: 256 * 4096, rng.bytes(1 << 20))
        try f.write(at: 2560 * 4096 + 4096, rng.bytes(256 << 10))
        try f.flush()
        let dir = s.file("plug")
        _ = try backupSet(original, dir)
        let m = try BackupSetManifest.read(path: dir + "/vm.blset")
        #expect(m.sectorSize == 4096 && m.volumes.map(\.firstLBA) == [256, 2560])
        let e = try exposeSet(dir)
        #expect(e.pointer.vhdx?.logicalSectorSize == 4096 && e.pointer.composition.sectorSize == 4096)
        let info = try sh(["vhdiinfo", e.stream]).out
        #expect(info.contains("Bytes per sector\t: 4096 bytes"), "\(info)")
        let mnt = s.dir("vhdi")
        let mounted = try sh(["vhdimount", e.stream, mnt])
        try #require(mounted.status == 0, "vhdimount: \(mounted.out)")
        defer { unmountFUSE(mnt) }
        let cmp = try sh(["qemu-img", "compare", "-f", "raw", "-F", "raw", mnt + "/vhdi1", original])
        #expect(cmp.status == 0 && cmp.out.contains("Images are identical"), "\(cmp.out)")
        let v = try loop4K(e.raw) { try sh(["sgdisk", "-v", $0]).out }
        #expect(v.contains("No problems found"), "\(v)")
    }

    /// Same disk, same seed: the same manifest, images and plugin, byte for byte.
    @Test(.requires(missing: volumeSetMissing)) func deterministic() throws {
        let s = Scratch("volume-set-determinism")
        let original = s.file("original.raw")
        try sgdiskDisk(original)
        var plugins: [[UInt8]] = []
        for run in ["a", "b"] {
            let dir = s.file(run)
            _ = try backupSet(original, dir)
            _ = try exposeSet(dir)
            plugins.append(try RawFile(path: dir + "/stream.vhdx").read(at: 0, count: 4 << 20))
        }
        for name in ["vm.blset", "vm.p1.bli", "vm.p2.bli"] {
            #expect(try Digest(s.file("a") + "/" + name) == Digest(s.file("b") + "/" + name), "\(name)")
        }
        #expect(plugins[0] == plugins[1])
    }

    /// A member removed or replaced after expose: nothing is served, and the error names the
    /// member. At expose, a member that disagrees with the manifest is refused.
    @Test(.requires(missing: volumeSetMissing)) func missingOrChangedMemberRefused() throws {
        let s = Scratch("volume-set-members")
        let original = s.file("original.raw")
        try sgdiskDisk(original)
        let dir = s.file("plug")
        _ = try backupSet(original, dir)
        _ = try exposeSet(dir)
        // Another backup of the same partition (another seed) put in place of member 2.
        let other = s.file("other")
        _ = try backupSet(original, other, seed: "another set")
        try FileManager.default.removeItem(atPath: dir + "/vm.p2.bli")
        func servedError() -> String {
            do {
                let plugin = try PluginFile.open(pluginPath: dir + "/vm.vhdx")
                _ = try plugin.read(at: plugin.payloadStart, count: 512)
                return "served"
            } catch { return "\(error)" }
        }
        let missing = servedError()
        #expect(missing.contains("volume set member") && missing.contains("vm.p2.bli") && missing.contains("nothing is served"), "\(missing)")
        try FileManager.default.copyItem(atPath: other + "/vm.p2.bli", toPath: dir + "/vm.p2.bli")
        let replaced = servedError()
        #expect(replaced.contains("vm.p2.bli") && replaced.contains("image ID"), "\(replaced)")
        // Expose checks the members against the manifest.
        var o = PluginFile.ExposeOptions()
        o.format = "vhdx"
        #expect(failure { try PluginFile.exposeSet(manifestPath: dir + "/vm.blset", pluginPath: dir + "/again.vhdx", options: o) }.satisfies { text in text.contains("vm.p2.bli") && text.contains("image ID") })
        try FileManager.default.removeItem(atPath: dir + "/vm.p2.bli")
        #expect(failure { try PluginFile.exposeSet(manifestPath: dir + "/vm.blset", pluginPath: dir + "/again.vhdx", options: o) }.satisfies { text in text.contains("vm.p2.bli") && text.contains("cannot be opened") })
    }

    /// Encrypted members (one passphrase for the set), and the reconfiguration layer over the
    /// composed set: an edit in the gap between the volumes and one over the root's data are
    /// recorded, the plugin re-rendered, and every reader of the plugin then serves the original
    /// disk with exactly those two edits.
    @Test(.requires(missing: volumeSetMissing)) func encryptedMembersAndReconfigurationLayer() throws {
        let s = Scratch("volume-set-reconf")
        let original = s.file("original.raw")
        try sgdiskDisk(original)
        let dir = s.file("plug")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let pass = PassphraseSource.bytes(Array("volume set passphrase".utf8))
        var o = BackupCreateOptions()
        o.imageID = BackupCreateOptions.imageID(seed: "volume-set-encrypted")
        o.blockSize = 64 << 10
        o.encrypt = true
        o.passphrase = pass
        o.scrypt = .testing
        _ = try BackupSetWriter.create(sourcePath: original, manifestPath: dir + "/vm.blset", partitions: [1, 2], options: o)
        #expect(try BackupImageReader.readHeader(path: dir + "/vm.p2.bli").header.isEncrypted)
        var eo = PluginFile.ExposeOptions()
        eo.passphrase = pass
        _ = try PluginFile.exposeSet(manifestPath: dir + "/vm.blset", pluginPath: dir + "/vm.vhdx", options: eo)
        var open = PluginFile.OpenOptions()
        open.passphrase = pass

        let layer = try PluginFile.openReconfigurationLayer(pluginPath: dir + "/vm.vhdx", options: open)
        var rng = Bytes(seed: 77)
        let gapEdit = rng.bytes(4096), rootEdit = rng.bytes(4096)
        let gapAt: UInt64 = 18432 * 512, rootAt: UInt64 = 20480 * 512 + 8192
        try gapEdit.withUnsafeBytes { try layer.write(at: gapAt, from: $0) }
        try rootEdit.withUnsafeBytes { try layer.write(at: rootAt, from: $0) }
        try layer.flush()
        let record = try PluginFile.recordReconfiguration(pluginPath: dir + "/vm.vhdx", target: "kvm-uefi", options: open)
        #expect(record.pluginRewritten && record.layerBytes == 8192)

        var expected = try RawFile(path: original).read(at: 0, count: 32 << 20)
        expected.put(gapEdit, at: Int(gapAt))
        expected.put(rootEdit, at: Int(rootAt))
        let plugin = try PluginFile.open(pluginPath: dir + "/vm.vhdx", options: open)
        #expect(plugin.pointer.reconfiguration?.targets == ["kvm-uefi"] && plugin.pointer.backupSet?.members.count == 2)
        #expect(try plugin.virtualDisk().read(at: 0, count: Int(plugin.virtualSize)) == expected)
        // The VHDX stream (its skeleton checked against the re-rendered one on open) too.
        let vhdx = try VHDXFile(source: plugin)
        #expect(try vhdx.read(at: 0, count: Int(vhdx.size)) == expected)
        // Without the passphrase nothing is served.
        let locked = try PluginFile.open(pluginPath: dir + "/vm.vhdx")
        #expect(failure { try locked.read(at: locked.payloadStart, count: 512) }.satisfies { text in text.contains("vm.p1.bli") })
    }

    /// Options that do not apply to a set are refused by the composer, naming the option.
    @Test func setCompositionRefusals() throws {
        let m = BackupSetManifest(diskGUID: GUID(diskGUID)!, sectorSize: 512, diskSize: 32 << 20, entryCount: 128, entrySize: 128, volumes: [
            .init(file: "a.bli", imageID: GUID(espGUID)!, headerDigest: String(repeating: "0", count: 64), number: 1,
                  typeGUID: GPTPartitionType.efiSystem, uniqueGUID: GUID(espGUID)!, attributes: 0, name: "EFI", firstLBA: 2048, size: 8 << 20),
        ])
        var o = DiskComposer.Options()
        o.partitionStartLBA = 4096
        #expect(failure { try DiskComposer.planSet(m, options: o) }.satisfies { text in text.contains("--partition-start") })
        o = DiskComposer.Options()
        o.partitionTable = .mbr
        #expect(failure { try DiskComposer.planSet(m, options: o) }.satisfies { text in text.contains("--partition-table mbr") })
        let c = try DiskComposer.planSet(m, options: DiskComposer.Options())
        #expect(c.kind == "gpt" && c.gpt?.partitions.first?.lastLBA == 2048 + 16384 - 1 && c.gpt?.partitions.first?.content == "backup:\(GUID(espGUID)!)")
    }

    /// Version 3 carries `backupSet` and only it; a version-1 or -2 pointer carrying one, or a
    /// version-3 pointer without one, is refused by the decoder.
    @Test func pointerVersionRules() throws {
        let member = PluginPointer.BackupSetRecord.Member(backupPath: "vm.p1.bli", backupImageID: espGUID, backupHeaderDigest: String(repeating: "a", count: 64), size: 512)
        var p = PluginPointer(backupPath: "vm.blset", backupImageID: "set", backupHeaderDigest: "", composition: .init(kind: "gpt", diskSize: 1 << 20),
                              vhdx: .init(blockSize: 1 << 20, logicalSectorSize: 512, physicalSectorSize: 512, seedHex: "", fileSize: 0, payloadStart: 0))
        p.version = PluginPointer.volumeSetVersion
        p.backupSet = .init(members: [member])
        #expect(try PluginPointer.decode(p.encode()) == p)
        var v1 = p
        v1.version = 1
        #expect(failure { try PluginPointer.decode(v1.encode()) }.satisfies { text in text.contains("cannot carry a `backupSet`") })
        var bare = p
        bare.backupSet = nil
        #expect(failure { try PluginPointer.decode(bare.encode()) }.satisfies { text in text.contains("requires a `backupSet`") })
        var dup = p
        dup.backupSet = .init(members: [member, member])
        #expect(failure { try PluginPointer.decode(dup.encode()) }.satisfies { text in text.contains("distinct image IDs") })
        var forged = p
        forged.backupSet!.members[0].content = "backup:other"
        #expect(failure { try PluginPointer.decode(forged.encode()) }.satisfies { text in text.contains("distinct image IDs") })
        #expect(PluginPointer.readableVersions.contains(1) && PluginPointer.readableVersions.contains(2))
    }
}

/// The description of the error `body` throws ("no error" when it returns).
private func failure(_ body: () throws -> Any) -> Failure {
    do { _ = try body(); return Failure(text: "no error") } catch { return Failure(text: "\(error)") }
}

private struct Failure: CustomStringConvertible {
    let text: String
    var description: String { text }
    func satisfies(_ check: (String) -> Bool) -> Bool { check(text) }
}

/// SHA-256 of a file, for byte-equality checks.
private struct Digest: Equatable {
    let hex: String
    init(_ path: String) throws {
        let f = try RawFile(path: path)
        hex = SHA256.hash(try f.read(at: 0, count: Int(f.size))).hex
    }
}
