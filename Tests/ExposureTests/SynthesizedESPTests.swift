import Foundation
import Processes
import Testing
import TestSupport
@testable import BackupImage
@testable import BlockCore
@testable import DiskFormats
@testable import Exposure

/// The synthesized EFI System Partition (docs/uefi.md) in a GPT composition, judged by tools we
/// did not write: sgdisk (the GPT: "No problems found", the ESP's type, place and name),
/// fsck.fat -n (the FAT32 file system, by its text), mtools (the loader read back byte for byte),
/// cmp of the volume's range against the source volume.
@Suite struct SynthesizedESPTests {
    static let tools = toolsMissing(["sgdisk", "fsck.fat", "mcopy"])
    static let loader: [UInt8] = { var b = Bytes(seed: 42); return b.bytes(300_000) }()

    /// A GPT disk made by sgdisk with the volume as partition 1 at `start`.
    static func gptDisk(_ s: Scratch, start: UInt64, volumeSize: Int = 8 << 20) throws -> (disk: String, volume: [UInt8]) {
        var b = Bytes(seed: start)
        var volume = [UInt8](repeating: 0, count: volumeSize)
        volume.put(b.bytes(1 << 20), at: 0)
        volume.put(b.bytes(4096), at: volumeSize - 8192)
        let size = start * 512 + UInt64(volumeSize) + (2 << 20)
        let path = s.file("disk.raw")
        _ = try RawFile.create(path: path, size: size)
        let r = try run("sgdisk", ["--disk-guid=11111111-2222-4333-8444-555555555555", "-n", "1:\(start):\(start + UInt64(volumeSize / 512) - 1)",
                                   "-t", "1:8300", "-u", "1:AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE", "-c", "1:root", path])
        #expect(r.status == 0, "\(r.stderr)")
        let f = try RawFile(path: path, writable: true)
        try f.write(at: start * 512, volume)
        try f.flush()
        return (path, volume)
    }

    static func exposeWithESP(_ s: Scratch, disk: String, plugin: String = "plug/vm.vhdx") throws -> String {
        try? FileManager.default.createDirectory(atPath: s.file("plug"), withIntermediateDirectories: true)
        var o = BackupCreateOptions()
        o.partition = 1
        o.imageID = BackupCreateOptions.imageID(seed: "esp-test")
        o.blockSize = 64 << 10
        if !FileManager.default.fileExists(atPath: s.file("plug/vm.bli")) {
            _ = try BackupImageWriter.create(sourcePath: disk, outputPath: s.file("plug/vm.bli"), options: o)
        }
        var e = PluginFile.ExposeOptions()
        e.composer.esp = .init(files: [.init(path: SynthesizedESP.fallbackLoaderPath, bytes: loader),
                                        .init(path: "/EFI/BOOT/NOTE.TXT", bytes: Array("bootlab\n".utf8))])
        try PluginFile.expose(backupPath: s.file("plug/vm.bli"), pluginPath: s.file(plugin), options: e)
        return s.file(plugin)
    }

    /// The composed disk as raw bytes, through `bootlab convert` (the product's read path).
    static func convert(_ plugin: String, _ out: String) throws -> RunResult {
        try run(bootlabPath, ["convert", "-O", "raw", plugin, out])
    }

    static func sgdiskPartitions(_ path: String) throws -> [(number: Int, first: UInt64, last: UInt64, code: String, name: String)] {
        let r = try run("sgdisk", ["-p", path])
        return r.stdout.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 6, let n = Int(f[0]), let a = UInt64(f[1]), let z = UInt64(f[2]) else { return nil }
            return (n, a, z, String(f[5]), f.dropFirst(6).joined(separator: " "))
        }
    }

    @Test(.requires(missing: tools), arguments: [(UInt64(133_120), "before"), (UInt64(2048), "after")])
    func composedESPIsValid(start: UInt64, where place: String) throws {
        let s = Scratch("esp-\(place)")
        let (disk, volume) = try Self.gptDisk(s, start: start)
        let plugin = try Self.exposeWithESP(s, disk: disk)
        let raw = s.file("composed.raw")
        let c = try Self.convert(plugin, raw)
        #expect(c.status == 0, "\(c.stderr)")

        let v = try run("sgdisk", ["-v", raw])
        #expect(v.stdout.contains("No problems found"), "sgdisk -v: \(v.stdout) \(v.stderr)")
        let parts = try Self.sgdiskPartitions(raw)
        let root = parts.first { $0.code == "8300" }
        let esp = parts.first { $0.code == "EF00" }
        #expect(root?.number == 1 && root?.first == start, "root partition: \(parts)")
        #expect(esp?.name == SynthesizedESP.partitionName, "\(parts)")
        #expect(esp?.number == 2)
        #expect(esp.map { $0.last - $0.first + 1 } == 131_072, "a 64 MiB ESP: \(parts)")
        if place == "before" { #expect(esp?.first == 2048, "\(parts)") }
        else { #expect(esp.map { $0.first >= start + UInt64(volume.count / 512) && $0.first % 2048 == 0 } == true, "\(parts)") }
        let table = try run("sgdisk", ["-p", raw]).stdout
        #expect(table.contains("11111111-2222-4333-8444-555555555555"), "the disk keeps its GUID: \(table)")

        // The volume's range is the source volume, byte for byte.
        let composed = try RawFile(path: raw)
        #expect(try composed.read(at: start * 512, count: volume.count) == volume)

        // The ESP: fsck-clean FAT32, the loader read back by mtools.
        guard let esp else { return }
        let img = s.file("esp.img")
        let out = try RawFile.create(path: img, size: (esp.last - esp.first + 1) * 512)
        try out.write(at: 0, try composed.read(at: esp.first * 512, count: Int(out.size)))
        try out.flush()
        let fsck = try run("fsck.fat", ["-n", img])
        let findings = (fsck.stdout + fsck.stderr).split(separator: "\n").filter { !$0.hasPrefix("fsck.fat ") && !$0.contains(" files, ") }
        #expect(fsck.status == 0 && findings.isEmpty, "fsck.fat -n: \(fsck.stdout) \(fsck.stderr)")
        let back = s.file("BOOTX64.EFI")
        let m = try run("mcopy", ["-n", "-i", img, "::/EFI/BOOT/BOOTX64.EFI", back], environment: ["MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"])
        #expect(m.status == 0, "\(m.stderr)")
        #expect([UInt8]((try? Data(contentsOf: URL(fileURLWithPath: back))) ?? Data()) == Self.loader)
        let blkid = try run("blkid", ["-p", "-o", "export", img])
        #expect(blkid.stdout.contains("VERSION=FAT32") && blkid.stdout.contains("LABEL=EFI"), "\(blkid.stdout)")
        // BPB_HiddSec names the ESP's own start.
        #expect(try composed.read(at: esp.first * 512 + 0x1C, count: 4).le32(0) == UInt32(esp.first))
    }

    @Test(.requires(missing: tools)) func deterministicAndSidecarChecked() throws {
        let s = Scratch("esp-determinism")
        let (disk, _) = try Self.gptDisk(s, start: 133_120)
        let a = try Self.exposeWithESP(s, disk: disk, plugin: "plug/a.vhdx")
        let b = try Self.exposeWithESP(s, disk: disk, plugin: "plug/b.vhdx")
        #expect(try Self.convert(a, s.file("a.raw")).status == 0)
        #expect(try Self.convert(b, s.file("b.raw")).status == 0)
        let same = try run("cmp", [s.file("a.raw"), s.file("b.raw")])
        #expect(same.status == 0, "two exposes of one backup differ: \(same.stdout)")

        // A sidecar file that changed after expose is refused, naming the ESP file.
        let dir = s.file("plug/a.vhdx.esp")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir)
        let target = names.first { name in
            ((try? FileManager.default.attributesOfItem(atPath: dir + "/" + name)[.size] as? NSNumber)?.intValue ?? 0) == Self.loader.count
        }
        #expect(target != nil, "the loader's sidecar file: \(names)")
        if let target {
            var bytes = Self.loader
            bytes[1000] ^= 0xFF
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/" + target))
            let r = try Self.convert(a, s.file("a2.raw"))
            #expect(r.status != 0)
            #expect(r.stderr.contains("/EFI/BOOT/BOOTX64.EFI changed since expose"), "\(r.stderr)")
            try FileManager.default.removeItem(atPath: dir + "/" + target)
            let r2 = try Self.convert(a, s.file("a3.raw"))
            #expect(r2.status != 0)
            #expect(r2.stderr.contains("/EFI/BOOT/BOOTX64.EFI is missing"), "\(r2.stderr)")
        }
    }

    @Test func refusals() throws {
        let s = Scratch("esp-refusals")
        let (disk, _) = try Self.gptDisk(s, start: 2048)
        try? FileManager.default.createDirectory(atPath: s.file("plug"), withIntermediateDirectories: true)
        var o = BackupCreateOptions()
        o.imageID = BackupCreateOptions.imageID(seed: "esp-whole")
        _ = try BackupImageWriter.create(sourcePath: disk, outputPath: s.file("plug/whole.bli"), options: o)
        var e = PluginFile.ExposeOptions()
        e.composer.esp = .init(files: [.init(path: SynthesizedESP.fallbackLoaderPath, bytes: [1, 2, 3])])
        #expect(throws: DiskComposer.CompositionError.self) {
            try PluginFile.expose(backupPath: s.file("plug/whole.bli"), pluginPath: s.file("plug/whole.vhdx"), options: e)
        }
        // A loader name FAT's 8.3 cannot hold is refused before anything is recorded.
        o.partition = 1
        _ = try BackupImageWriter.create(sourcePath: disk, outputPath: s.file("plug/vol.bli"), options: o)
        e.composer.esp = .init(files: [.init(path: "/efi/boot/bootx64.efi", bytes: [1])])
        #expect(throws: FAT32Image.WriterError.self) {
            try PluginFile.expose(backupPath: s.file("plug/vol.bli"), pluginPath: s.file("plug/vol.vhdx"), options: e)
        }
        e.composer.esp = .init(files: [.init(path: SynthesizedESP.fallbackLoaderPath, bytes: [1])])
        e.composer.partitionTable = .mbr
        #expect(throws: DiskComposer.CompositionError.self) {
            try PluginFile.expose(backupPath: s.file("plug/vol.bli"), pluginPath: s.file("plug/vol.vhdx"), options: e)
        }
    }

    /// `bootlab expose --esp` end to end: a volume without x86_64-efi modules is refused with the
    /// typed error naming the option; `--esp-loader-modules host` builds the loader from this
    /// host's grub-efi-amd64-bin, and its embedded config searches for the volume's UUID.
    @Test(.requires(missing: toolsMissing(["sgdisk", "mke2fs", "mcopy", "grub-mkimage"])
                    ?? (FileManager.default.fileExists(atPath: "/usr/lib/grub/x86_64-efi/kernel.img") ? nil : "grub-efi-amd64-bin is not installed (ci/packages/uefi.txt)")))
    func exposeCommandBuildsTheLoaderOrSaysWhy() throws {
        let s = Scratch("esp-cli")
        let uuid = "0e5f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
        let root = s.dir("root")
        try FileManager.default.createDirectory(atPath: root + "/boot/grub", withIntermediateDirectories: true)
        try Data("set timeout=0\n".utf8).write(to: URL(fileURLWithPath: root + "/boot/grub/grub.cfg"))
        let vol = s.file("vol.raw")
        let mk = try run("mke2fs", ["-q", "-t", "ext4", "-b", "4096", "-U", uuid, "-d", root, vol, "16M"])
        #expect(mk.status == 0, "\(mk.stderr)")
        let disk = s.file("disk.raw")
        _ = try RawFile.create(path: disk, size: 24 << 20)
        #expect(try run("sgdisk", ["-n", "1:2048:34815", "-t", "1:8300", disk]).status == 0)
        #expect(try run("dd", ["if=\(vol)", "of=\(disk)", "bs=512", "seek=2048", "conv=notrunc,sparse", "status=none"]).status == 0)
        try FileManager.default.createDirectory(atPath: s.file("plug"), withIntermediateDirectories: true)
        #expect(try run(bootlabPath, ["backup", "create", disk, s.file("plug/vm.bli"), "--partition", "1"]).status == 0)

        let refused = try run(bootlabPath, ["expose", s.file("plug/vm.bli"), "--out", s.file("plug/vm.vhdx"), "--esp"])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("the volume carries no x86_64-efi GRUB modules"), "\(refused.stderr)")
        #expect(refused.stderr.contains("--esp-loader-modules host"), "\(refused.stderr)")

        let ok = try run(bootlabPath, ["expose", s.file("plug/vm.bli"), "--out", s.file("plug/vm.vhdx"), "--esp", "--esp-loader-modules", "host"])
        #expect(ok.status == 0, "\(ok.stderr)")
        let raw = s.file("composed.raw")
        #expect(try Self.convert(s.file("plug/vm.vhdx"), raw).status == 0)
        #expect(try run("sgdisk", ["-v", raw]).stdout.contains("No problems found"))
        guard let esp = try Self.sgdiskPartitions(raw).first(where: { $0.code == "EF00" }) else {
            Issue.record("no ESP in \(try run("sgdisk", ["-p", raw]).stdout)"); return
        }
        let loader = s.file("BOOTX64.EFI")
        let m = try run("mcopy", ["-n", "-i", "\(raw)@@\(esp.first * 512)", "::/EFI/BOOT/BOOTX64.EFI", loader],
                        environment: ["MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"])
        #expect(m.status == 0, "\(m.stderr)")
        let image = [UInt8]((try? Data(contentsOf: URL(fileURLWithPath: loader))) ?? Data())
        #expect(image.starts(with: Array("MZ".utf8)))
        let needle = Array("search.fs_uuid \(uuid) root".utf8)
        #expect(image.count > needle.count && (0...(image.count - needle.count)).contains { image[$0..<$0 + needle.count].elementsEqual(needle) },
                "the loader's embedded config does not search for \(uuid)")
    }
}
