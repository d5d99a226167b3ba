import BlockCore
import Foundation
import Testing
@testable import Reconfigure

/// The GRUB EFI loader of a synthesized ESP (docs/uefi.md), without an appliance: built from the
/// volume's own x86_64-efi modules (read with debugfs), its embedded config, determinism, and the
/// typed refusal for a volume without EFI modules (unless the host's are allowed explicitly).
/// The OVMF boot of it is the lab's uefi-esp-synthesized scenario.
@Suite(.enabled(if: FileManager.default.fileExists(atPath: "/usr/lib/grub/x86_64-efi/kernel.img"),
                "platform lacks a capability: grub-efi-amd64-bin is not installed (ci/packages/uefi.txt)"))
struct GrubEFILoaderTests {
    static let uuid = "6a7e0c5d-1b2f-4c3d-8e9f-0000000e0f10"

    /// A 48 MiB ext4 volume with /boot/grub/grub.cfg and, optionally, grub-efi-amd64-bin's modules.
    static func volume(at path: String, efiModules: Bool) throws {
        let root = path + ".root"
        try? FileManager.default.removeItem(atPath: root)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/boot/grub", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/usr/lib/grub", withIntermediateDirectories: true)
        if efiModules { try Fixture.sh(["cp", "-r", "/usr/lib/grub/x86_64-efi", root + "/usr/lib/grub/"]) }
        try Data("set timeout=0\n".utf8).write(to: URL(fileURLWithPath: root + "/boot/grub/grub.cfg"))
        try? FileManager.default.removeItem(atPath: path)
        try Fixture.sh(["env", "E2FSPROGS_FAKE_TIME=1700000000", "mke2fs", "-q", "-t", "ext4", "-b", "4096", "-U", uuid,
                        "-E", "hash_seed=\(uuid)", "-d", root, path, "48M"])
    }

    @Test func builtFromTheVolumesOwnModules() throws {
        let dir = try Fixture.tempDir("grub-efi")
        defer { try? FileManager.default.removeItem(at: dir) }
        let vol = dir.appendingPathComponent("vol.raw").path
        try Self.volume(at: vol, efiModules: true)
        let l = try GrubEFILoader.build(volumePath: vol)
        #expect(l.moduleSource == .volume)
        #expect(l.moduleDirectory == "/usr/lib/grub/x86_64-efi")
        #expect(l.filesystemUUID == Self.uuid)
        #expect(l.configPath == "/boot/grub/grub.cfg")
        // Modules are not next to grub.cfg: $prefix points at them on the volume, normal mode at grub.cfg.
        #expect(l.embeddedConfig == """
            search.fs_uuid \(Self.uuid) root
            set prefix=($root)/usr/lib/grub
            normal ($root)/boot/grub/grub.cfg

            """)
        #expect(l.modules.contains("part_gpt") && l.modules.contains("ext2") && l.modules.contains("linux"))
        // A PE32+ image for x86-64 (machine 0x8664), with the embedded config inside.
        let pe = Int(l.image.le32(0x3C))
        #expect(Array(l.image[0..<2]) == Array("MZ".utf8))
        #expect(Array(l.image[pe..<pe + 4]) == [0x50, 0x45, 0, 0])
        #expect(l.image.le16(pe + 4) == 0x8664)
        #expect(GrubBootCode.contains(l.image, Array("search.fs_uuid \(Self.uuid) root".utf8)))
        #expect(l.espFiles.map(\.path) == ["/EFI/BOOT/BOOTX64.EFI"])
        // Deterministic, and the same from a block source that is not a file (the backup reader's case).
        #expect(try GrubEFILoader.build(volumePath: vol) == l)
        #expect(try GrubEFILoader.build(volume: WrappedSource(inner: try RawFile(path: vol))) == l)
    }

    @Test func aVolumeWithoutEFIModulesIsRefusedUnlessTheHostsAreAllowed() throws {
        let dir = try Fixture.tempDir("grub-efi-none")
        defer { try? FileManager.default.removeItem(at: dir) }
        let vol = dir.appendingPathComponent("vol.raw").path
        try Self.volume(at: vol, efiModules: false)
        do {
            _ = try GrubEFILoader.build(volumePath: vol)
            Issue.record("a volume without x86_64-efi modules was accepted")
        } catch let e as GrubEFIError {
            #expect(e == .noEFIModules(volume: vol, looked: ["/boot/grub/x86_64-efi", "/usr/lib/grub/x86_64-efi"]))
            #expect(e.description.contains("the volume carries no x86_64-efi GRUB modules"))
            #expect(e.description.contains("--esp-loader-modules host"))
        }
        let host = try GrubEFILoader.build(volumePath: vol, allowHostModules: true)
        #expect(host.moduleSource == .host)
        #expect(host.moduleDirectory == GrubEFILoader.hostModuleDirectory)
        #expect(host.embeddedConfig == "search.fs_uuid \(Self.uuid) root\nset prefix=($root)/boot/grub\n")
    }

    /// fstab's /boot/efi entry follows the disk's ESP when it names a file system the disk lacks.
    @Test func fstabBootEFIFollowsTheSynthesizedESP() {
        let fstab = """
            # <file system> <mount point> <type> <options> <dump> <pass>
            UUID=\(Self.uuid) / ext4 errors=remount-ro 0 1
            UUID=ABCD-0001\t/boot/efi\tvfat\tumask=0077\t0\t1
            #UUID=ABCD-0002 /boot/efi vfat umask=0077 0 1
            /dev/sdb1 /data ext4 defaults 0 2
            """
        let disk: Set<String> = [Self.uuid, "1A2B-3C4D"]
        let (text, changes) = BootConfig.fstabWithESP(fstab, espUUID: "1A2B-3C4D", diskUUIDs: disk)
        #expect(changes == ["UUID=ABCD-0001 /boot/efi → UUID=1A2B-3C4D (the disk's EFI System Partition)"])
        #expect(text == fstab.replacingOccurrences(of: "UUID=ABCD-0001\t/boot/efi", with: "UUID=1A2B-3C4D\t/boot/efi"))
        // Idempotent, and an entry that names a file system on the disk is left alone.
        #expect(BootConfig.fstabWithESP(text, espUUID: "1A2B-3C4D", diskUUIDs: disk).1.isEmpty)
        #expect(BootConfig.fstabWithESP(fstab, espUUID: "1A2B-3C4D", diskUUIDs: disk.union(["abcd-0001"])).1.isEmpty)
        // A device node is pointed at the ESP too (the disk's names differ under every hypervisor).
        let dev = BootConfig.fstabWithESP("/dev/sda1 /boot/efi vfat defaults 0 1\n", espUUID: "1A2B-3C4D", diskUUIDs: disk)
        #expect(dev.0 == "UUID=1A2B-3C4D /boot/efi vfat defaults 0 1\n")
    }

    /// Reconfiguring a UEFI disk (GPT, an ESP with the fallback loader, a GRUB root) through the
    /// appliance: no BIOS boot code is attempted — before, a GPT disk with a grub.cfg was refused
    /// ("BIOS GRUB there needs a BIOS boot partition") — and nothing is written before the root.
    @Test func reconfiguringAUEFIDiskKeepsItsLoader() throws {
        let dir = try Fixture.tempDir("grub-efi-reconf")
        defer { try? FileManager.default.removeItem(at: dir) }
        let root = dir.appendingPathComponent("root").path
        try FileManager.default.createDirectory(atPath: root + "/boot/grub", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/etc", withIntermediateDirectories: true)
        try Data("set timeout=0\n".utf8).write(to: URL(fileURLWithPath: root + "/boot/grub/grub.cfg"))
        try Data("UUID=\(Self.uuid) / ext4 defaults 0 1\nUUID=DEAD-BEEF /boot/efi vfat umask=0077 0 1\n".utf8)
            .write(to: URL(fileURLWithPath: root + "/etc/fstab"))
        let vol = dir.appendingPathComponent("vol.raw").path
        _ = try Fixture.sh(["mke2fs", "-q", "-t", "ext4", "-b", "4096", "-U", Self.uuid, "-d", root, vol, "16M"])
        let esp = dir.appendingPathComponent("esp.img").path
        _ = try Fixture.sh(["truncate", "-s", "40M", esp])
        _ = try Fixture.sh(["mkfs.fat", "-F", "32", "-i", "1A2B3C4D", esp])
        _ = try Fixture.sh(["env", "MTOOLS_SKIP_CHECK=1", "mmd", "-i", esp, "::/EFI", "::/EFI/BOOT"])
        let loader = dir.appendingPathComponent("BOOTX64.EFI").path
        try Data("MZ not really a loader".utf8).write(to: URL(fileURLWithPath: loader))
        _ = try Fixture.sh(["env", "MTOOLS_SKIP_CHECK=1", "mcopy", "-i", esp, loader, "::/EFI/BOOT/BOOTX64.EFI"])
        let disk = dir.appendingPathComponent("disk.raw").path
        _ = try Fixture.sh(["truncate", "-s", "60M", disk])
        _ = try Fixture.sh(["sgdisk", "-n", "1:2048:83967", "-t", "1:EF00", "-n", "2:83968:116735", "-t", "2:8300", disk])
        _ = try Fixture.sh(["dd", "if=\(esp)", "of=\(disk)", "bs=512", "seek=2048", "conv=notrunc,sparse", "status=none"])
        _ = try Fixture.sh(["dd", "if=\(vol)", "of=\(disk)", "bs=512", "seek=83968", "conv=notrunc,sparse", "status=none"])
        let layer = try RawFile.create(path: dir.appendingPathComponent("layer").path, size: try RawFile(path: disk).size)
        let r = try Reconfigurator.reconfigure(image: DiskImage(path: disk, format: "raw"), layer: layer, target: "kvm-uefi",
                                               drivers: try Fixture.drivers)
        #expect(!r.changes.contains { $0.kind == "grub-boot-code" }, "\(r.changes)")
        #expect(r.bootLoader?.contains("UEFI") == true, "\(String(describing: r.bootLoader))")
        // This grub-only volume has no initramfs a Linux step extends, but its fstab mounts
        // /boot/efi from a FAT volume ID the disk lacks (DEAD-BEEF): it is pointed at the disk's
        // ESP (1A2B-3C4D) all the same, and nothing else in it changes.
        #expect(r.os == "linux-grub", "\(r.os)")
        #expect(r.changes.filter { $0.kind == "fstab-uuid" }.map(\.detail)
                == ["UUID=DEAD-BEEF /boot/efi → UUID=1A2B-3C4D (the disk's EFI System Partition)"], "\(r.changes)")
        let composed = dir.appendingPathComponent("composed.raw").path
        try Fixture.compose(base: disk, layer: layer, into: composed)
        let root2 = dir.appendingPathComponent("root2.raw").path
        _ = try Fixture.sh(["dd", "if=\(composed)", "of=\(root2)", "bs=512", "skip=83968", "count=32768", "status=none"])
        let fstab = try Fixture.sh(["debugfs", "-R", "cat /etc/fstab", root2])
        #expect(fstab == "UUID=\(Self.uuid) / ext4 defaults 0 1\nUUID=1A2B-3C4D /boot/efi vfat umask=0077 0 1\n", "\(fstab)")
        // Sector 0 (the protective MBR) is untouched: nothing in the layer's first MiB.
        #expect(try layer.allExtents().filter { $0.kind == .data && $0.offset < 1 << 20 }.isEmpty)
    }
}
