import Foundation
import Testing
import TestSupport
@testable import Lab

private let missing: String? = toolsMissing(["sgdisk", "sfdisk", "blkid", "mkfs.fat", "mke2fs", "debugfs"])

/// The fstab-esp validator's decision on real disks made by tools we did not write (sgdisk,
/// mkfs.fat, mke2fs -d): a GPT with an ESP (partition 1) and an ext4 root (partition 2) whose
/// /etc/fstab mounts /boot/efi by UUID. The same root behind an ESP with the named volume ID
/// passes; behind an ESP with another one (what a synthesized ESP is until the reconfiguration
/// rewrites the entry) it fails, naming both.
@Suite struct FstabESPValidatorTests {
    static func disk(_ s: Scratch, espSerial: String) throws -> String {
        let tree = URL(fileURLWithPath: s.file("tree"))
        try FileManager.default.createDirectory(at: tree.appendingPathComponent("etc"), withIntermediateDirectories: true)
        try Data("UUID=0f1e2d3c-4b5a-4697-8877-665544332211 / ext4 errors=remount-ro 0 1\nUUID=1A2B-3C4D /boot/efi vfat umask=0077 0 1\n".utf8)
            .write(to: tree.appendingPathComponent("etc/fstab"))
        let root = s.file("root-\(espSerial).raw")
        try Shell.run("mke2fs", ["-q", "-t", "ext4", "-b", "4096", "-U", "0f1e2d3c-4b5a-4697-8877-665544332211", "-d", tree.path, root, "8M"])
        let esp = s.file("esp-\(espSerial).raw")
        try Shell.run("truncate", ["-s", "34M", esp])
        try Shell.run("mkfs.fat", ["-F", "32", "-s", "1", "-i", espSerial, "-h", "2048", "-n", "EFI", esp])
        let espSectors = UInt64(34 << 20) / 512
        let rootStart = 2048 + espSectors
        let image = GPTImage(sectorSize: 512, diskGUID: "5D6C7B8A-9F0E-4D1C-8B2A-3F4E5D6C7B8A", partitions: [
            .init(number: 1, firstLBA: 2048, lastLBA: rootStart - 1, type: "EF00", uniqueGUID: "0A1B2C3D-4E5F-4061-8273-8495A6B7C8D9"),
            .init(number: 2, firstLBA: rootStart, lastLBA: rootStart + UInt64(8 << 20) / 512 - 1, type: "8300",
                  uniqueGUID: "1A2B3C4D-5E6F-4071-8293-A4B5C6D7E8F9"),
        ])
        let disk = s.file("disk-\(espSerial).raw")
        try image.writeDisk(to: disk, size: 44 << 20, volume: root, intoPartition: 2)
        try DiskGenerator.copy(file: URL(fileURLWithPath: esp), into: URL(fileURLWithPath: disk), at: 2048 * 512)
        return disk
    }

    static let machine = SourceMachine(name: "main", kernel: .cloud, filesystem: .ext4, bootloader: .grubEFI, volumeSize: 8 << 20,
                                       partitionStart: 2048 + UInt64(34 << 20) / 512, diskSize: 44 << 20, storageDrivers: nil, marker: "debian-uefi")

    @Test(.requires(missing: missing)) func matchingVolumeIDPassesOtherFails() throws {
        let s = Scratch("fstab-esp")
        let work = URL(fileURLWithPath: s.file("work"))
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        let good = try FstabESPValidator.check(disk: try Self.disk(s, espSerial: "1a2b3c4d"), machine: Self.machine,
                                               rootStart: Self.machine.partitionStart, sourceVolume: nil, work: work)
        #expect(good.verdict == .pass, "\(good.message)")
        #expect(good.message.contains("UUID=1A2B-3C4D = the ESP at LBA 2048"))
        let bad = try FstabESPValidator.check(disk: try Self.disk(s, espSerial: "55667788"), machine: Self.machine,
                                              rootStart: Self.machine.partitionStart, sourceVolume: nil, work: work)
        #expect(bad.verdict == .fail)
        #expect(bad.message.contains("mounts /boot/efi from UUID=1A2B-3C4D, but the disk's ESP (LBA 2048) has volume ID 5566-7788"), "\(bad.message)")
    }
}
