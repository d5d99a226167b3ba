import BlockCore
import Foundation
import Processes
@testable import Reconfigure

/// Fixtures for the GRUB tests: volumes, composed disks (syslinux MBR + volume), and boots whose
/// BIOS text goes to the serial port (SeaBIOS `sercon`), so "Missing operating system." is read
/// in well under a second instead of waiting for a timeout.
enum GrubFixture {
    /// The cached debootstrapped Debian volume (built on first use, ~80 s; see the script, which
    /// the lab's generator runs too for `os: debian-grub` machines: one place).
    static func debianVolume() throws -> String {
        let out = try Fixture.sh([Fixture.repoRoot.appendingPathComponent("Scenarios/machines/make-debian-grub.sh").path])
        return out.split(separator: "\n").last.map(String.init) ?? ""
    }

    static let debianUUID = "b0071ab0-6e1b-4d2e-9a5c-0000000d3b12"
    static let debianMarker = "BOOTLAB-MARKER debian-grub booted"

    /// A small ext4 volume holding `/boot/grub/grub.cfg` and the host's GRUB i386-pc modules
    /// (in `/usr/lib/grub/i386-pc`, or also in `/boot/grub/i386-pc` like a grub-install'ed
    /// system). `withGrub: false` leaves grub.cfg out.
    static func smallVolume(at path: String, uuid: String, withGrub: Bool = true, grubInstalled: Bool = false) throws {
        let root = path + ".root"
        try? FileManager.default.removeItem(atPath: root)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/boot/grub", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/usr/lib/grub", withIntermediateDirectories: true)
        try Fixture.sh(["cp", "-r", "/usr/lib/grub/i386-pc", root + "/usr/lib/grub/"])
        if grubInstalled { try Fixture.sh(["cp", "-r", "/usr/lib/grub/i386-pc", root + "/boot/grub/"]) }
        if withGrub { try Data("set timeout=0\n".utf8).write(to: URL(fileURLWithPath: root + "/boot/grub/grub.cfg")) }
        try? FileManager.default.removeItem(atPath: path)
        try Fixture.sh(["env", "E2FSPROGS_FAKE_TIME=1700000000", "mke2fs", "-q", "-t", "ext4", "-b", "4096", "-U", uuid,
                        "-E", "hash_seed=\(uuid)", "-d", root, path, "16M"])
    }

    /// Sector 0 of a composed disk: syslinux's generic mbr.bin, signature 0x0b00d3b1, one
    /// bootable Linux partition at `startLBA` of `sectors`.
    static func genericMBR(startLBA: UInt64, sectors: UInt64, in dir: URL) throws -> [UInt8] {
        let path = dir.appendingPathComponent("mbr-\(startLBA).raw").path
        try? FileManager.default.removeItem(atPath: path)
        try Fixture.sh(["truncate", "-s", "\((startLBA + sectors) * 512)", path])
        try Command(["sfdisk", "-q", path], input: .bytes(Array("label: dos\nlabel-id: 0x0b00d3b1\nstart=\(startLBA), size=\(sectors), type=83, bootable\n".utf8))).run()
        try Fixture.sh(["dd", "if=/usr/lib/syslinux/mbr/mbr.bin", "of=\(path)", "bs=440", "count=1", "conv=notrunc", "status=none"])
        let sector = try RawFile(path: path).read(at: 0, count: 512)
        try FileManager.default.removeItem(atPath: path)
        return sector
    }

    /// A raw disk: the generic MBR, then `volume` at LBA 2048 (sparse).
    static func composeDisk(volume: String, into path: String) throws {
        let size = try RawFile(path: volume).size
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
        let mbr = try genericMBR(startLBA: 2048, sectors: size / 512, in: dir)
        try? FileManager.default.removeItem(atPath: path)
        let disk = try RawFile.create(path: path, size: 2048 * 512 + size)
        try disk.write(at: 0, mbr)
        try disk.flush()
        try Fixture.sh(["dd", "if=\(volume)", "of=\(path)", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"])
    }

    struct Boot {
        var console: String
        var status: Int32
        var seconds: Double
    }

    /// Boots `disk` (copy-on-write: `snapshot=on`) behind `controller`'s emulation with BIOS text
    /// mirrored to the serial port; gives up after `timeout` seconds.
    static func boot(_ disk: String, controller: String, timeout: Int) throws -> Boot {
        let c = try Fixture.drivers.controller(for: controller).controller
        let dir = URL(fileURLWithPath: disk).deletingLastPathComponent()
        // SeaBIOS reads etc/sercon-port as a little-endian integer: COM1.
        let port = dir.appendingPathComponent("sercon-port.bin")
        try Data([0xF8, 0x03, 0, 0, 0, 0, 0, 0]).write(to: port)
        let log = dir.appendingPathComponent("serial-\(controller).txt").path
        try? FileManager.default.removeItem(atPath: log)
        var args = ["timeout", "\(timeout)", "qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-display", "none",
                    "-nic", "none", "-serial", "file:\(log)", "-monitor", "none", "-no-reboot",
                    // A failed BIOS boot reboots at once, which -no-reboot turns into an exit.
                    "-boot", "reboot-timeout=0", "-fw_cfg", "name=etc/sercon-port,file=\(port.path)"]
        args += c.qemu.map { $0.replacingOccurrences(of: "{disk}", with: disk).replacingOccurrences(of: "{format}", with: "raw") + ($0.contains("{disk}") ? ",snapshot=on" : "") }
        let start = Date()
        let ended = try Command(args, stdout: .null, stderr: .null).run(check: false).termination
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: log))) ?? Data(), as: UTF8.self)
        return Boot(console: text, status: ended.status, seconds: Date().timeIntervalSince(start))
    }

    /// The bytes a layer holds, as (offset, bytes) per data extent.
    static func dataExtents(_ layer: BlockSource) throws -> [Extent] {
        try layer.allExtents().filter { $0.kind == .data }
    }
}

/// A block source that is not a `RawFile` (exercises the copy-to-scratch path).
struct WrappedSource: BlockSource {
    let inner: BlockSource
    var size: UInt64 { inner.size }
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws { try inner.read(at: offset, into: buffer) }
    func extents(in range: Range<UInt64>) throws -> [Extent] { try inner.extents(in: range) }
}
