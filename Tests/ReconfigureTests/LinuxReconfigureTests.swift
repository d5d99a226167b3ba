import BlockCore
import Foundation
import Testing
@testable import Reconfigure

/// The foreign-drivers case end to end: a tiny Linux whose initramfs only knows AHCI, reconfigured
/// for IDE and virtio targets, then booted under QEMU TCG behind those controllers.
@Suite(.serialized) struct LinuxReconfigureTests {
    @Test func tinyLinuxBootsOnIDEAndVirtioAfterReconfiguration() throws {
        let dir = try Fixture.tempDir("linux")
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = dir.appendingPathComponent("base.raw").path
        try Fixture.tinyLinux(at: base, modules: ["ahci", "sd_mod"])
        let baseDigest = try Fixture.sha256(base)
        let size = try RawFile(path: base).size
        let drivers = try Fixture.drivers
        let image = DiskImage(path: base, format: "raw")

        // IDE (hyperv-gen1).
        let ideLayer = try RawFile.create(path: dir.appendingPathComponent("ide.layer").path, size: size)
        let r1 = try Reconfigurator.reconfigure(image: image, layer: ideLayer, target: "hyperv-gen1", drivers: drivers)
        #expect(r1.os == "linux-initramfs")
        #expect(r1.bootLoader == "syslinux")
        #expect(r1.changed)
        #expect(r1.originalDrivers.contains("ahci"))
        #expect(!r1.originalDrivers.contains("ata_piix"))
        #expect(r1.addedModules == ["kernel/drivers/ata/ata_piix.ko"])
        #expect(r1.changes.contains { $0.kind == "boot-root-uuid" && $0.detail == "root=/dev/sda1 → root=UUID=1234-ABCD" })
        #expect(r1.layerBytesWritten > 0 && r1.layerBytesWritten < 8 << 20)
        #expect(try ideLayer.allExtents().filter { $0.kind == .data }.reduce(0) { $0 + $1.length } == r1.layerBytesWritten)
        #expect(try Fixture.sha256(base) == baseDigest, "the base image must never be written")

        // Idempotent: nothing more to do, nothing written.
        let r2 = try Reconfigurator.reconfigure(image: image, layer: ideLayer, target: "hyperv-gen1", drivers: drivers)
        #expect(!r2.changed, "second run changes: \(r2.changes)")
        #expect(r2.layerWrites.isEmpty)
        #expect(r2.originalDrivers.contains("ata_piix"))

        // virtio-blk (kvm-virtio), its own layer.
        let virtioLayer = try RawFile.create(path: dir.appendingPathComponent("virtio.layer").path, size: size)
        let r3 = try Reconfigurator.reconfigure(image: image, layer: virtioLayer, target: "kvm-virtio", drivers: drivers)
        #expect(r3.addedModules.contains("kernel/drivers/block/virtio_blk.ko"))
        #expect(r3.addedModules.contains("kernel/drivers/virtio/virtio_pci.ko"))
        #expect(try Fixture.sha256(base) == baseDigest)

        // Boots: reconfigured ones reach the marker; the original fails on IDE (the check can fail).
        let ideDisk = dir.appendingPathComponent("ide.raw").path
        try Fixture.compose(base: base, layer: ideLayer, into: ideDisk)
        let ideOut = try Fixture.boot(ideDisk, controller: "ide")
        #expect(ideOut.contains("BOOTLAB-MARKER tiny-linux booted"), "IDE boot output:\n\(ideOut)")
        let virtioDisk = dir.appendingPathComponent("virtio.raw").path
        try Fixture.compose(base: base, layer: virtioLayer, into: virtioDisk)
        let virtioOut = try Fixture.boot(virtioDisk, controller: "virtio-blk")
        #expect(virtioOut.contains("BOOTLAB-MARKER tiny-linux booted"), "virtio boot output:\n\(virtioOut)")
        let plainOut = try Fixture.boot(base, controller: "ide")
        #expect(!plainOut.contains("BOOTLAB-MARKER"))
        #expect(plainOut.contains("BOOTLAB-ROOT-MISSING"))
    }

    /// The tiny-Linux path keeps fstab's `/boot/efi` on the disk's one FAT file system
    /// (docs/uefi.md, "Reconfiguring a UEFI disk"), through the appliance: an fstab naming a FAT
    /// volume ID the disk lacks (DEAD-BEEF) is pointed at the disk's (here the boot volume's own
    /// 1234-ABCD); other lines are left as they are; the fstab read back from base ▸ layer says so.
    @Test func tinyLinuxFstabBootEFIFollowsTheDisksFAT() throws {
        let dir = try Fixture.tempDir("linux-fstab-esp")
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = dir.appendingPathComponent("base.raw").path
        try Fixture.tinyLinux(at: base, modules: ["ahci", "sd_mod"])
        let fstab = dir.appendingPathComponent("fstab").path
        try Data("/dev/sda1 / vfat ro 0 0\nUUID=DEAD-BEEF /boot/efi vfat umask=0077 0 1\n".utf8).write(to: URL(fileURLWithPath: fstab))
        _ = try Fixture.sh(["env", "MTOOLS_SKIP_CHECK=1", "mmd", "-i", base + "@@1M", "::/etc"])
        _ = try Fixture.sh(["env", "MTOOLS_SKIP_CHECK=1", "mcopy", "-i", base + "@@1M", fstab, "::/etc/fstab"])
        let layer = try RawFile.create(path: dir.appendingPathComponent("layer").path, size: try RawFile(path: base).size)
        let r = try Reconfigurator.reconfigure(image: DiskImage(path: base, format: "raw"), layer: layer, target: "hyperv-gen1",
                                               drivers: try Fixture.drivers)
        #expect(r.os == "linux-initramfs")
        #expect(r.changes.filter { $0.kind == "fstab-uuid" }.map(\.detail)
                == ["/dev/sda1 → UUID=1234-ABCD", "UUID=DEAD-BEEF /boot/efi → UUID=1234-ABCD (the disk's EFI System Partition)"], "\(r.changes)")
        let composed = dir.appendingPathComponent("composed.raw").path
        try Fixture.compose(base: base, layer: layer, into: composed)
        let back = try Fixture.sh(["env", "MTOOLS_SKIP_CHECK=1", "mtype", "-i", composed + "@@1M", "::/etc/fstab"])
        #expect(back == "UUID=1234-ABCD / vfat ro 0 0\nUUID=1234-ABCD /boot/efi vfat umask=0077 0 1\n", "\(back)")
    }
}
