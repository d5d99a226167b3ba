import BlockCore
import Foundation
import Processes
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Reconfiguration over an external source (issue 16): a volume-only backup in a user's own
/// format (examples/vendor-format: gzip chunks read by an nbdkit Python plugin), exposed with
/// `expose --source nbdkit:…`, then `bootlab reconfigure`d for Hyper-V generation 1 (IDE). The
/// engine reads the composed disk through its `serve --raw` child, which starts the source under
/// the same allow-list; the changes go to the plugin's reconfiguration layer, never to the backup.
///
/// The machine is the tiny Linux of the reconfiguration tests (make-tiny-linux.sh): its initramfs
/// loads only AHCI, so it cannot find its root on IDE until reconfigured.
@Suite(.requires(missing: toolsMissing(["nbdkit", "python3", "qemu-img", "qemu-system-x86_64", "sfdisk", "mkfs.fat", "syslinux", "mtype", "cpio"])),
       .serialized)
struct ExternalSourceReconfigurationTests {
    @Test func aVolumeFromAnNbdkitPythonSourceIsReconfiguredForIDEAndBoots() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-source-reconf-\(getpid())").path
        try? FileManager.default.removeItem(atPath: dir)
        let plug = dir + "/plug"
        try FileManager.default.createDirectory(atPath: plug, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let env = environment(passphrase: nil)

        // The machine's disk; its one partition is the volume the vendor tool backs up.
        let disk = dir + "/disk.raw"
        let tiny = try run(repoRoot.appendingPathComponent("Tests/ReconfigureTests/Fixtures/make-tiny-linux.sh").path,
                           [disk, "ahci", "sd_mod"], environment: env, timeout: 300)
        try #require(tiny.status == 0, "make-tiny-linux.sh: \(tiny.stderr)")
        let d = try RawFile(path: disk)
        let mbr = try d.read(at: 0, count: 512)
        let le32 = { (o: Int) in UInt64(mbr[o]) | UInt64(mbr[o + 1]) << 8 | UInt64(mbr[o + 2]) << 16 | UInt64(mbr[o + 3]) << 24 }
        let start = le32(446 + 8) * 512, length = le32(446 + 12) * 512
        try #require(start == 1 << 20 && length > 0)
        let volume = try d.read(at: start, count: Int(length))
        let v = try RawFile.create(path: dir + "/vol.img", size: length)
        try v.write(at: 0, volume)
        try v.flush()

        let example = repoRoot.appendingPathComponent("examples/vendor-format").path
        let backup = try run("python3", [example + "/vendor-backup.py", "backup", dir + "/vol.img", plug + "/vm.vbk"], environment: env)
        try #require(backup.status == 0, "vendor-backup.py: \(backup.stderr)")
        try FileManager.default.copyItem(atPath: example + "/vendor-nbdkit.py", toPath: plug + "/vendor-nbdkit.py")
        let backupDigest = try sha256(plug + "/vm.vbk")
        let pluginProgramDigest = try sha256(plug + "/vendor-nbdkit.py")

        let plugin = plug + "/vm.vhdx"
        let e = try run(bootlab, ["expose", "--source", "nbdkit:python:\(plug)/vendor-nbdkit.py:file=\(plug)/vm.vbk", "--out", plugin],
                        environment: env)
        try #require(e.status == 0, "expose: \(e.stdout)\(e.stderr)")
        #expect(e.stdout.contains("volume composition"), "\(e.stdout)")

        // Before: the disk read through the source does not find its root on IDE (AHCI only).
        let before = dir + "/before.raw"
        let b = try run(bootlab, ["convert", "-O", "raw", plugin, before, "--allow-source-plugin", "python"], environment: env, timeout: 300)
        try #require(b.status == 0, "convert: \(b.stderr)")
        let unreconfigured = try boot(before)
        #expect(unreconfigured.contains("BOOTLAB-ROOT-MISSING") && !unreconfigured.contains("BOOTLAB-MARKER"),
                "IDE boot before reconfiguration:\n\(unreconfigured)")
        try FileManager.default.removeItem(atPath: before)

        // Reconfiguration needs the same allowance as serving: the child starts the source.
        let refused = try run(bootlab, ["reconfigure", plugin, "--target", "hyperv-gen1", "--drivers", driversPath],
                              environment: env, timeout: 120)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("--allow-source-plugin python"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: plugin + ".reconf"), "a refused run left a layer")

        let r = try run(bootlab, ["reconfigure", plugin, "--target", "hyperv-gen1", "--json", "--drivers", driversPath,
                                  "--allow-source-plugin", "python"],
                        environment: env, timeout: 600)
        try #require(r.status == 0, "reconfigure: \(r.stdout)\(r.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let report = try #require(json["report"] as? [String: Any], "\(r.stdout)")
        #expect((report["addedModules"] as? [String]) == ["kernel/drivers/ata/ata_piix.ko"], "\(r.stdout)")
        #expect(FileManager.default.fileExists(atPath: plugin + ".reconf"), "no reconfiguration layer")

        // The backup (and the plugin program) are untouched; the changes live in the layer.
        #expect(try sha256(plug + "/vm.vbk") == backupDigest, "the backup must never be written")
        #expect(try sha256(plug + "/vendor-nbdkit.py") == pluginProgramDigest)

        // Read back through the plugin (nbdkit ▸ Python ▸ composition ▸ layer): the load list the
        // report describes is on the disk, the volume outside the changed files is the backup's,
        // and the disk boots on IDE to the marker.
        let out = dir + "/reconfigured.raw"
        let c = try run(bootlab, ["convert", "-O", "raw", plugin, out, "--allow-source-plugin", "python"], environment: env, timeout: 300)
        try #require(c.status == 0, "convert: \(c.stderr)")
        let got = try RawFile(path: out)
        // Outside the ranges the report says it wrote, the disk's volume is the backup's bytes.
        var gotVolume = try got.read(at: start, count: Int(length)), original = volume
        let writes = try #require(report["layerWrites"] as? [[String: Any]], "\(r.stdout)")
        #expect(!writes.isEmpty)
        for w in writes {
            let o = (w["offset"] as? NSNumber)?.uint64Value ?? 0, n = (w["length"] as? NSNumber)?.uint64Value ?? 0
            #expect(o >= start && o + n <= start + length, "a layer write outside the volume: \(w)")
            let lo = Int(min(max(o, start) - start, length)), hi = Int(min(max(o + n, start) - start, length))
            for i in lo..<hi { gotVolume[i] = 0; original[i] = 0 }
        }
        #expect(gotVolume == original, "the volume outside the layer's writes differs from the backup's")
        // The initramfs the report names now loads the IDE driver: its load list and module, read back.
        // (Named `device:path`, e.g. /dev/sda1:/initrd.gz.)
        let initrd = try #require((report["initramfs"] as? [String])?.first?.split(separator: ":").last.map(String.init), "\(r.stdout)")
        let list = try run("/bin/sh", ["-c", "MTOOLS_SKIP_CHECK=1 mtype -i \"$1@@1M\" \"::$2\" | gunzip -c | cpio -i --quiet --to-stdout etc/bootlab/modules",
                                       "sh", out, initrd], environment: env)
        #expect(list.status == 0, "\(list.stderr)")
        #expect(list.stdout.contains("kernel/drivers/ata/ata_piix.ko"), "load list after reconfiguration:\n\(list.stdout)")
        let console = try boot(out)
        #expect(console.contains("BOOTLAB-MARKER tiny-linux booted"), "IDE boot after reconfiguration:\n\(console)")
        #expect(try sha256(plug + "/vm.vbk") == backupDigest, "the backup must never be written")
    }
}
