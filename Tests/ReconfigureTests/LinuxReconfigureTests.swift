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
}
