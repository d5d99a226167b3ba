import BlockCore
import Foundation
import Testing
@testable import Reconfigure

/// The real-distribution must-show of issue 6: a debootstrapped Debian (ext4, cloud kernel,
/// grub-pc-bin, a systemd unit printing the marker on ttyS0), taken volume-only and composed
/// behind syslinux's generic MBR at LBA 2048. Without reconfiguration the BIOS finds no boot
/// code ("Missing operating system."); after it, the layer's GRUB boot code boots the volume to
/// its marker under QEMU TCG. The volume and the composed disk are never written.
@Suite(.serialized) struct GrubDebianBootTests {
    @Test func debianVolumeOnlyBackupBootsAfterGrubRegeneration() throws {
        let volume = try GrubFixture.debianVolume()
        #expect(FileManager.default.fileExists(atPath: volume), "make-debian-grub.sh printed \(volume)")
        let volumeDigest = try Fixture.sha256(volume)
        let dir = try Fixture.tempDir("grub-debian")
        defer { try? FileManager.default.removeItem(at: dir) }
        let disk = dir.appendingPathComponent("disk.raw").path
        try GrubFixture.composeDisk(volume: volume, into: disk)
        let diskDigest = try Fixture.sha256(disk)
        let diskSize = try RawFile(path: disk).size
        let sector0 = try RawFile(path: disk).read(at: 0, count: 512)

        // 1. As composed: the generic MBR chains to the partition's empty boot sector.
        let plain = try GrubFixture.boot(disk, controller: "virtio-blk", timeout: 60)
        #expect(plain.console.contains("Missing operating system"), "plain boot console:\n\(plain.console)")
        #expect(!plain.console.contains(GrubFixture.debianMarker))

        // 2. Reconfigure for kvm-virtio into a sparse layer.
        let layerPath = dir.appendingPathComponent("layer.raw").path
        let layer = try RawFile.create(path: layerPath, size: diskSize)
        let drivers = try Fixture.drivers
        let image = DiskImage(path: disk, format: "raw")
        var clock = Date()
        let r1 = try Reconfigurator.reconfigure(image: image, layer: layer, target: "kvm-virtio", drivers: drivers)
        let reconfigureSeconds = Date().timeIntervalSince(clock)
        #expect(r1.os == "linux-initramfs-tools")
        #expect(r1.bootLoader == "grub")
        #expect(r1.changes.map(\.kind) == ["grub-boot-code"], "changes: \(r1.changes)")
        let change = try #require(r1.changes.first)
        #expect(change.location == "/dev/sda")
        #expect(change.detail.contains("search.fs_uuid \(GrubFixture.debianUUID)"), "\(change.detail)")
        #expect(change.detail.contains("/usr/lib/grub/i386-pc"), "\(change.detail)")
        // Only the boot gap is touched: everything the layer holds lies before the partition.
        let held = try GrubFixture.dataExtents(layer)
        #expect(!held.isEmpty && held.allSatisfy { $0.end <= 2048 * 512 }, "layer extents \(held)")
        #expect(r1.layerBytesWritten == held.reduce(0) { $0 + $1.length })
        let lba0 = try layer.read(at: 0, count: 512)
        #expect(Array(lba0[440..<512]) == Array(sector0[440..<512]), "disk signature and partition table kept")

        // The engine (libguestfs) and the volume-only function (debugfs) produce the same bytes.
        let direct = try GrubBootCode.regenerate(volumePath: volume, partitionStartLBA: 2048, sector0: sector0)
        for p in direct.patches {
            #expect(try layer.read(at: p.offset, count: p.bytes.count) == p.bytes, "patch at \(p.offset)")
        }

        // 3. Idempotent.
        clock = Date()
        let r2 = try Reconfigurator.reconfigure(image: image, layer: layer, target: "kvm-virtio", drivers: drivers)
        let secondRunSeconds = Date().timeIntervalSince(clock)
        #expect(!r2.changed, "second run changes: \(r2.changes)")
        #expect(r2.layerWrites.isEmpty)
        #expect(r2.bootLoader == "grub")

        // 4. disk ▸ layer boots to the marker.
        let composed = dir.appendingPathComponent("composed.raw").path
        try Fixture.compose(base: disk, layer: layer, into: composed)
        let booted = try GrubFixture.boot(composed, controller: "virtio-blk", timeout: 240)
        #expect(booted.console.contains(GrubFixture.debianMarker), "reconfigured boot (\(booted.seconds) s, status \(booted.status)) console:\n\(booted.console.suffix(4000))")
        #expect(!booted.console.contains("Missing operating system"))
        // The same layer on Hyper-V generation 1 (IDE): GRUB's boot code is controller-independent
        // and Debian's MODULES=most initramfs already carries ata_piix, so a hyperv-gen1
        // reconfiguration adds nothing the layer lacks.
        let ide = try GrubFixture.boot(composed, controller: "ide", timeout: 240)
        #expect(ide.console.contains(GrubFixture.debianMarker), "IDE boot (\(ide.seconds) s, status \(ide.status)) console:\n\(ide.console.suffix(4000))")
        print(String(format: "debian-grub: plain boot %.1f s; reconfigure %.1f s (second run %.1f s); marker on virtio after %.1f s, on IDE after %.1f s",
                     plain.seconds, reconfigureSeconds, secondRunSeconds, booted.seconds, ide.seconds))

        // The backup's bytes never changed.
        #expect(try Fixture.sha256(volume) == volumeDigest, "the volume must never be written")
        #expect(try Fixture.sha256(disk) == diskDigest, "the composed disk must never be written")
    }
}
