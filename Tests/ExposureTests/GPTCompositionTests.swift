import Foundation
import Processes
import Testing
import TestSupport
@testable import BackupImage
@testable import BlockCore
@testable import DiskFormats
@testable import Exposure

/// Why these cross-checks cannot run: sgdisk (gdisk) builds the expected disks, loop devices give
/// it 4096-byte sectors, qemu-img compares.
private let gptCompositionMissing: String? = getuid() != 0
    ? "not root (4096-byte-sector disks are built through loop devices)"
    : fuseMissing ?? toolsMissing(["sgdisk", "losetup", "qemu-img", "vhdiinfo", "vhdimount", "fusermount3"])

private let diskGUID = "3B1E2D4C-5A69-4877-8695-A4B3C2D1E0F9"
private let rootGUID = "8F7E6D5C-4B3A-4291-8807-F6E5D4C3B2A1"

private func sh(_ argv: [String]) throws -> (status: Int32, out: String) {
    let r = try Command(argv, stderr: .stdout).run(check: false)
    return (r.termination.status, r.stdoutText)
}

/// Runs `body` with a block device of `ss`-byte sectors over `file` (the file itself for 512).
private func device<T>(_ file: String, _ ss: Int, _ body: (String) throws -> T) throws -> T {
    if ss == 512 { return try body(file) }
    let r = try sh(["losetup", "-b", String(ss), "-f", "--show", file])
    guard r.status == 0 else { throw CompositionTestError(description: "losetup: \(r.out)") }
    let dev = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
    defer { _ = try? sh(["losetup", "-d", dev]) }
    return try body(dev)
}

private struct CompositionTestError: Error, CustomStringConvertible { var description: String }

/// A disk built by sgdisk (not by our writer): `size` bytes, partition 2 at `start` holding
/// `volume`, type Linux, the fixed GUIDs, name "root", legacy-BIOS-bootable attribute.
private func sgdiskDisk(_ path: String, ss: Int, size: UInt64, start: UInt64, volume: [UInt8]) throws {
    _ = try RawFile.create(path: path, size: size)
    let last = start + UInt64(volume.count / ss) - 1
    try device(path, ss) { dev in
        let r = try sh(["sgdisk", "-U", diskGUID, "-n", "2:\(start):\(last)", "-t", "2:8300", "-u", "2:\(rootGUID)",
                        "-c", "2:root", "-A", "2:set:2", dev])
        guard r.status == 0 else { throw CompositionTestError(description: "sgdisk: \(r.out)") }
    }
    let f = try RawFile(path: path, writable: true)
    try f.write(at: start * UInt64(ss), volume)
    try f.flush()
}

/// `sgdisk -v` on a raw disk of `ss`-byte sectors: its whole report.
private func sgdiskVerify(_ path: String, ss: Int) throws -> String {
    try device(path, ss) { try sh(["sgdisk", "-v", $0]).out }
}

/// The VHDX at `vhdx` compared with the raw `expected` by a reader we did not write. QEMU 7.2
/// refuses VHDX files whose logical sectors are not 512 bytes ("Operation not supported"), so a
/// 4096-byte-sector VHDX is read through libvhdi (`vhdimount`, FUSE) and the mounted raw disk is
/// compared; 512-byte ones by `qemu-img compare -f vhdx` directly.
private func compareVHDX(_ vhdx: String, _ expected: String, ss: Int, scratch: Scratch) throws -> (status: Int32, out: String) {
    if ss == 512 { return try sh(["qemu-img", "compare", "-f", "vhdx", "-F", "raw", vhdx, expected]) }
    let info = try sh(["vhdiinfo", vhdx]).out
    guard info.contains("Bytes per sector\t: \(ss) bytes") else { return (1, "vhdiinfo: \(info)") }
    let mnt = scratch.dir("vhdi-\(UUID().uuidString.prefix(8))")
    let m = try sh(["vhdimount", vhdx, mnt])
    guard m.status == 0 else { return (m.status, "vhdimount: \(m.out)") }
    defer { unmountFUSE(mnt) }
    return try sh(["qemu-img", "compare", "-f", "raw", "-F", "raw", mnt + "/vhdi1", expected])
}

/// A 6 MiB volume with data at both ends and a hole between.
/// Writes a plugin's full served bytes (the native file) to `dir/stream.<format>` and its virtual
/// disk to `dir/virtual.raw` (also for the volume-set tests).
func writeServedBytes(of pluginPath: String, into dir: String, format: String) throws -> (stream: String, raw: String, pointer: PluginPointer) {
    let plugin = try PluginFile.open(pluginPath: pluginPath)
    let stream = dir + "/stream.\(format)", raw = dir + "/virtual.raw"
    let s = try RawFile.create(path: stream, size: 0)
    try s.write(at: 0, try plugin.read(at: 0, count: Int(plugin.size)))
    try s.flush()
    let r = try RawFile.create(path: raw, size: 0)
    try r.write(at: 0, try plugin.virtualDisk().read(at: 0, count: Int(plugin.virtualSize)))
    try r.flush()
    return (stream, raw, plugin.pointer)
}

private func volumeBytes() -> [UInt8] {
    var rng = Bytes(seed: 14)
    var v = [UInt8](repeating: 0, count: 6 << 20)
    v.put(rng.bytes(1 << 20), at: 0)
    v.put(rng.bytes(8192), at: (6 << 20) - 8192)
    return v
}

/// Volume-only backups of GPT partitions, exposed: composed as GPT with the original GUIDs,
/// entry number, attributes, name and start, equal to the original disk (sgdisk-made) under
/// `qemu-img compare`, and judged clean by `sgdisk -v`; relocated with --partition-start; an
/// MBR only when asked; 4096-byte-sector volumes in VHDX with 4096-byte logical sectors.
@Suite(.serialized) struct GPTCompositionTests {
    /// Backs up partition 2 of `disk` into `dir/vm.bli`.
    static func backup(_ disk: String, _ dir: String, partition: Int? = 2, kind: SourceKind? = nil) throws -> String {
        var o = BackupCreateOptions()
        o.partition = partition
        o.sourceKind = kind
        o.imageID = BackupCreateOptions.imageID(seed: "gpt-composition")
        o.blockSize = 64 << 10
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        _ = try BackupImageWriter.create(sourcePath: disk, outputPath: dir + "/vm.bli", options: o)
        return dir + "/vm.bli"
    }

    /// Exposes `bli` as `dir/name` and writes the plugin's full served bytes (the native file)
    /// to `dir/stream.<ext>` and its virtual disk to `dir/virtual.raw`.
    static func expose(_ bli: String, _ dir: String, format: String = "vhdx", start: UInt64? = nil,
                       table: DiskComposer.PartitionTableChoice = .auto) throws -> (report: PluginFile.ExposeReport, stream: String, raw: String, pointer: PluginPointer) {
        var o = PluginFile.ExposeOptions()
        o.format = format
        o.composer.partitionStartLBA = start
        o.composer.partitionTable = table
        o.composer.bootCode = [UInt8](repeating: 0, count: 440)
        let report = try PluginFile.expose(backupPath: bli, pluginPath: dir + "/vm.\(format)", options: o)
        let served = try writeServedBytes(of: dir + "/vm.\(format)", into: dir, format: format)
        return (report, served.stream, served.raw, served.pointer)
    }

    @Test(.requires(missing: gptCompositionMissing), arguments: [512, 4096])
    func composedAsTheOriginalDisk(ss: Int) throws {
        let s = Scratch("gpt-compose-\(ss)")
        let vol = volumeBytes()
        let start: UInt64 = ss == 512 ? 2048 : 256
        let original = s.file("original.raw")
        try sgdiskDisk(original, ss: ss, size: 16 << 20, start: start, volume: vol)
        let bli = try Self.backup(original, s.file("plug"))
        let h = try BackupImageReader.readHeader(path: bli).header
        #expect(h.partitionScheme == .gpt && h.logicalSectorSize == UInt32(ss) && h.partitionNumber == 2 && h.partitionStartLBA == start)
        #expect(h.gptAttributes == 4 && h.gptPartitionName == "root" && h.gptEntryCount == 128 && h.gptEntrySize == 128 && h.minorVersion == 1)
        #expect(h.gptDiskGUID == GUID(diskGUID) && h.gptPartitionGUID == GUID(rootGUID))

        let e = try Self.expose(bli, s.file("plug"))
        #expect(e.report.composition == "gpt" && e.report.partitionStartLBA == start && e.report.virtualSize == 16 << 20)
        #expect(e.pointer.vhdx?.logicalSectorSize == UInt32(ss))
        // The exposed VHDX (as a hypervisor reads it) equals the original disk, byte for byte.
        let cmp = try compareVHDX(e.stream, original, ss: ss, scratch: s)
        #expect(cmp.status == 0 && cmp.out.contains("Images are identical"), "\(cmp.out)")
        #expect(try VHDXFile(source: RawFile(path: e.stream)).logicalSectorSize == UInt32(ss))
        // GPT fdisk judges the composed disk clean.
        let v = try sgdiskVerify(e.raw, ss: ss)
        #expect(v.contains("No problems found"), "\(v)")
        // Our own reader: the original table.
        let g = try GPT.read(from: RawFile(path: e.raw), sectorSize: ss)
        #expect(g.partitions.count == 1 && g.partitions[0].number == 2 && g.partitions[0].name == "root" && g.partitions[0].attributes == 4)
    }

    @Test(.requires(missing: gptCompositionMissing), arguments: [512, 4096])
    func relocatedWithPartitionStart(ss: Int) throws {
        let s = Scratch("gpt-move-\(ss)")
        let vol = volumeBytes()
        let (start, moved): (UInt64, UInt64) = ss == 512 ? (2048, 4096) : (256, 1024)
        let original = s.file("original.raw")
        try sgdiskDisk(original, ss: ss, size: 16 << 20, start: start, volume: vol)
        let bli = try Self.backup(original, s.file("plug"))
        let e = try Self.expose(bli, s.file("plug"), start: moved)
        #expect(e.report.partitionStartLBA == moved)
        // Expected: sgdisk makes the same table with the partition at the new start.
        let expected = s.file("expected.raw")
        try sgdiskDisk(expected, ss: ss, size: 16 << 20, start: moved, volume: vol)
        let cmp = try compareVHDX(e.stream, expected, ss: ss, scratch: s)
        #expect(cmp.status == 0 && cmp.out.contains("Images are identical"), "\(cmp.out)")
        #expect(try sgdiskVerify(e.raw, ss: ss).contains("No problems found"))
        // A start inside the table's own structures is refused with the reason.
        #expect(throws: DiskComposer.CompositionError.self) { _ = try Self.expose(bli, s.file("plug"), start: 3) }
    }

    /// qcow2 (no sector-size field): the 512-byte GPT disk through another native view.
    @Test(.requires(missing: gptCompositionMissing)) func qcow2View() throws {
        let s = Scratch("gpt-qcow2")
        let vol = volumeBytes()
        let original = s.file("original.raw")
        try sgdiskDisk(original, ss: 512, size: 16 << 20, start: 2048, volume: vol)
        let bli = try Self.backup(original, s.file("plug"))
        let e = try Self.expose(bli, s.file("plug"), format: "qcow2")
        let cmp = try sh(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", e.stream, original])
        #expect(cmp.status == 0 && cmp.out.contains("Images are identical"), "\(cmp.out)")
    }

    /// `--partition-table mbr` (a BIOS target): the old MBR composition, type from the file system.
    @Test(.requires(missing: gptCompositionMissing)) func mbrWhenAsked() throws {
        let s = Scratch("gpt-as-mbr")
        let original = s.file("original.raw")
        try sgdiskDisk(original, ss: 512, size: 16 << 20, start: 2048, volume: volumeBytes())
        let bli = try Self.backup(original, s.file("plug"))
        let e = try Self.expose(bli, s.file("plug"), table: .mbr)
        #expect(e.report.composition == "volume" && e.pointer.composition.gpt == nil)
        // An MBR composition's pointer is what releases before GPT wrote: no "gpt" key.
        let json = String(decoding: try e.pointer.encode(), as: UTF8.self)
        #expect(json.contains("\"kind\":\"volume\"") && !json.contains("\"gpt\""), "\(json)")
        let t = try PartitionTable.read(from: RawFile(path: e.raw))
        #expect(t.scheme == .mbr && t.entries.map(\.startLBA) == [2048] && t.entries[0].bootable)
        // A 4096-byte-sector volume cannot be an MBR composition: a clear error.
        let s4 = Scratch("gpt-as-mbr-4k")
        try sgdiskDisk(s4.file("o.raw"), ss: 4096, size: 16 << 20, start: 256, volume: volumeBytes())
        let bli4 = try Self.backup(s4.file("o.raw"), s4.file("plug"))
        #expect { _ = try Self.expose(bli4, s4.file("plug"), table: .mbr) } throws: {
            "\($0)".contains("needs 512-byte sectors")
        }
        // Nor a native format whose sectors are 512 bytes (the drivers say so; docs/uefi.md, "4 KiB sectors").
        for (format, says) in [("vmdk", "VMDK sectors are 512 bytes"), ("vhd", "VHD has 512-byte sectors only"),
                               ("vdi", "VDI has 512-byte sectors only")] {
            #expect { _ = try Self.expose(bli4, s4.file("plug"), format: format) } throws: { "\($0)".contains(says) }
            #expect(!FileManager.default.fileExists(atPath: s4.file("plug/vm.\(format)")), "no \(format) plugin is left behind")
        }
        // qcow2 stores no sector size: it holds the 4096-byte composition's bytes (the hypervisor
        // presents 4096-byte sectors), equal to the original 4Kn disk by qemu-img's reading.
        let q = try Self.expose(bli4, s4.file("plug"), format: "qcow2")
        #expect(q.pointer.composition.sectorSize == 4096)
        let cmp4 = try sh(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", q.stream, s4.file("o.raw")])
        #expect(cmp4.status == 0 && cmp4.out.contains("Images are identical"), "\(cmp4.out)")
        #expect(try sgdiskVerify(q.raw, ss: 4096).contains("No problems found"))
    }

    /// A 4Kn volume exposed as qcow2 with a synthesized ESP (docs/uefi.md, "4 KiB sectors"), read
    /// back by qemu-img: the ESP is FAT32 with 4096-byte sectors, 260 MiB at LBA 256 (the 1 MiB
    /// boundary, before the volume at LBA 66816 — where the source's ESP was); sgdisk (through a
    /// 4096-byte loop device) finds the GPT clean, fsck.fat -n the ESP, minfo reads 4096-byte
    /// sectors and the ESP's hidden sectors, mcopy the loader byte for byte; the volume is the source's.
    @Test(.requires(missing: gptCompositionMissing ?? toolsMissing(["fsck.fat", "minfo", "mcopy"])))
    func fourKnVolumeWithSynthesizedESPAsQcow2() throws {
        let s = Scratch("gpt-4kn-esp")
        let original = s.file("o.raw")
        let start: UInt64 = 66_816, volume = volumeBytes()
        try sgdiskDisk(original, ss: 4096, size: (start << 12) + UInt64(volume.count) + (1 << 20), start: start, volume: volume)
        let bli = try Self.backup(original, s.file("plug"))
        var loader = Bytes(seed: 4096)
        let loaderBytes = [UInt8]("MZ".utf8) + loader.bytes(200_000)
        var o = PluginFile.ExposeOptions()
        o.format = "qcow2"
        o.composer.esp = .init(files: [.init(path: SynthesizedESP.fallbackLoaderPath, bytes: loaderBytes)])
        try PluginFile.expose(backupPath: bli, pluginPath: s.file("plug/vm.qcow2"), options: o)
        let plugin = try PluginFile.open(pluginPath: s.file("plug/vm.qcow2"))
        let stream = try RawFile.create(path: s.file("stream.qcow2"), size: 0)
        try stream.write(at: 0, try plugin.read(at: 0, count: Int(plugin.size)))
        try stream.flush()
        let raw = s.file("composed.raw")
        let conv = try sh(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", s.file("stream.qcow2"), raw])
        #expect(conv.status == 0, "\(conv.out)")

        #expect(try sgdiskVerify(raw, ss: 4096).contains("No problems found"))
        let table = try device(raw, 4096) { try sh(["sgdisk", "-p", $0]).out }
        #expect(table.contains("Sector size (logical/physical): 4096/4096 bytes"), "\(table)")
        let rows = table.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        let esp = rows.first { $0.count >= 6 && $0[5] == "EF00" }, root = rows.first { $0.count >= 6 && $0[5] == "8300" }
        #expect(esp.map { [$0[0], $0[1], $0[2]] } == ["1", "256", "66815"], "\(table)")
        #expect(root.map { [$0[0], $0[1]] } == ["2", "66816"], "\(table)")

        let composed = try RawFile(path: raw)
        #expect(try composed.read(at: start << 12, count: volume.count) == volume)
        let img = s.file("esp.img")
        let d = try sh(["dd", "if=\(raw)", "of=\(img)", "bs=4096", "skip=256", "count=66560", "conv=sparse", "status=none"])
        #expect(d.status == 0, "\(d.out)")
        let fsck = try sh(["fsck.fat", "-n", img])
        let findings = fsck.out.split(separator: "\n").filter { !$0.hasPrefix("fsck.fat ") && !$0.contains(" files, ") }
        #expect(fsck.status == 0 && findings.isEmpty, "fsck.fat -n: \(fsck.out)")
        let env = ["MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"]
        let info = try Command(["minfo", "-i", img, "::"], environment: env, stderr: .stdout).run(check: false).stdoutText
        #expect(info.contains("sector size: 4096 bytes") && info.contains("hidden sectors: 256"), "\(info)")
        let back = s.file("BOOTX64.EFI")
        let m = try Command(["mcopy", "-n", "-i", img, "::/EFI/BOOT/BOOTX64.EFI", back], environment: env, stderr: .stdout).run(check: false)
        #expect(m.termination.status == 0, "\(m.stdoutText)")
        #expect([UInt8]((try? Data(contentsOf: URL(fileURLWithPath: back))) ?? Data()) == loaderBytes)
    }

    /// A whole 4Kn disk (its backup records 4096-byte sectors): served as it is, and the native
    /// view says so — VHDX advertises 4096 (libvhdi: "Bytes per sector: 4096", and its reading
    /// equals the disk), qcow2 holds it, 512-byte-sector formats refuse it; a 512-byte disk's
    /// pointer is unchanged (no `diskSectorSize` key).
    @Test(.requires(missing: gptCompositionMissing)) func whole4KnDiskAdvertisesItsSectors() throws {
        let s = Scratch("gpt-whole-4kn")
        let original = s.file("o.raw")
        try sgdiskDisk(original, ss: 4096, size: 16 << 20, start: 256, volume: volumeBytes())
        let bli = try Self.backup(original, s.file("plug"), partition: nil, kind: .disk)
        let v = try Self.expose(bli, s.file("plug"))
        #expect(v.pointer.composition.kind == "disk" && v.pointer.composition.diskSectorSize == 4096)
        #expect(v.pointer.vhdx?.logicalSectorSize == 4096 && v.pointer.vhdx?.physicalSectorSize == 4096)
        let cmp = try compareVHDX(v.stream, original, ss: 4096, scratch: s)
        #expect(cmp.status == 0 && cmp.out.contains("Images are identical"), "\(cmp.out)")
        let q = try Self.expose(bli, s.file("plug"), format: "qcow2")
        let qc = try sh(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", q.stream, original])
        #expect(qc.status == 0 && qc.out.contains("Images are identical"), "\(qc.out)")
        #expect { _ = try Self.expose(bli, s.file("plug"), format: "vmdk") } throws: { "\($0)".contains("VMDK sectors are 512 bytes") }
        // An untrusted pointer cannot claim another sector size, nor one on a composed disk.
        for (kind, size) in [("disk", 2048), ("gpt", 4096)] {
            var bad = v.pointer
            bad.composition.kind = kind
            bad.composition.diskSectorSize = size
            #expect { _ = try PluginPointer.decode(try bad.encode()) } throws: { "\($0)".contains("diskSectorSize \(size)") }
        }
        #expect(try PluginPointer.decode(try v.pointer.encode()) == v.pointer)

        let s512 = Scratch("gpt-whole-512")
        try sgdiskDisk(s512.file("o.raw"), ss: 512, size: 16 << 20, start: 2048, volume: volumeBytes())
        let e = try Self.expose(try Self.backup(s512.file("o.raw"), s512.file("plug"), partition: nil, kind: .disk), s512.file("plug"))
        let json = String(decoding: try e.pointer.encode(), as: UTF8.self)
        #expect(e.pointer.composition.sectorSize == 512 && !json.contains("diskSectorSize"), "\(json)")
    }

    /// A bare volume (no table recorded) composed as GPT: GUIDs derived from the backup's image
    /// ID — the same on every expose, different per role — and the type from the file system.
    @Test(.requires(missing: gptCompositionMissing)) func derivedGUIDsWhenNoneRecorded() throws {
        let s = Scratch("gpt-derived")
        let volPath = s.file("vol.raw")
        let f = try RawFile.create(path: volPath, size: 0)
        try f.write(at: 0, volumeBytes())
        try f.flush()
        let bli = try Self.backup(volPath, s.file("plug"), partition: nil, kind: .volume)
        let a = try Self.expose(bli, s.file("plug"), table: .gpt)
        let b = try Self.expose(bli, s.file("plug"), table: .gpt)
        #expect(a.pointer == b.pointer)
        let g = try #require(a.pointer.composition.gpt)
        let id = try BackupImageReader.readHeader(path: bli).header.imageID
        #expect(g.diskGUID == GUID.derived(seed: id.bytes, label: "gpt-disk"))
        #expect(g.partitions.map(\.uniqueGUID) == [GUID.derived(seed: id.bytes, label: "gpt-partition-1")])
        #expect(g.partitions[0].typeGUID == GPTPartitionType.linuxFileSystem && g.partitions[0].firstLBA == 2048)
        #expect(try sgdiskVerify(a.raw, ss: 512).contains("No problems found"))
        let v = try RawFile(path: a.raw)
        #expect(try v.read(at: 2048 * 512, count: 6 << 20) == volumeBytes())
    }
}

@Suite struct GPTComposedDiskTests {
    /// Two partitions from two sources (the volume and a synthesized one, as an ESP will be):
    /// each at its LBA, tables at both ends, zeros between; extents say so.
    @Test func partsFromAnySource() throws {
        let esp = MemorySource([UInt8](repeating: 0xE5, count: 4096))
        let vol = MemorySource([UInt8](repeating: 0x0F, count: 4096) + [UInt8](repeating: 0, count: 4096), zeroRanges: [4096..<8192])
        let g = try GPT.standard(diskSize: 4 << 20, sectorSize: 512, diskGUID: GUID.derived(seed: [1], label: "d"), partitions: [
            .init(number: 1, typeGUID: GPTPartitionType.efiSystem, uniqueGUID: GUID.derived(seed: [1], label: "p1"), firstLBA: 2048, lastLBA: 2048 + 15),
            .init(number: 2, typeGUID: GPTPartitionType.linuxFileSystem, uniqueGUID: GUID.derived(seed: [1], label: "p2"), firstLBA: 4096, lastLBA: 4096 + 15),
        ])
        let disk = try GPTComposedDisk(table: g, partitions: [
            ComposedPartition(entry: g.partitions[1], content: vol), ComposedPartition(entry: g.partitions[0], content: esp),
        ])
        let all = try disk.read(at: 0, count: Int(disk.size))
        var expected = [UInt8](repeating: 0, count: 4 << 20)
        expected.put(g.encodePrimaryArea(), at: 0)
        expected.put(g.encodeBackupArea(), at: Int(g.backupArea.lowerBound))
        expected.put(esp.contents, at: 2048 * 512)
        expected.put(vol.contents, at: 4096 * 512)
        #expect(all == expected)
        #expect(try GPT.read(from: disk, sectorSize: 512) == g)
        let data = try disk.allExtents().filter { $0.kind == .data }.map { $0.offset..<($0.offset + $0.length) }
        let espAt: UInt64 = 2048 * 512, volAt: UInt64 = 4096 * 512
        let wanted: [Range<UInt64>] = [0..<g.primaryArea.upperBound, espAt..<(espAt + 4096), volAt..<(volAt + 4096), g.backupArea]
        #expect(data == wanted)
        // Unaligned reads across region borders.
        let border = Int(espAt) - 3
        let across = try disk.read(at: UInt64(border), count: 10)
        #expect(across == Array(expected[border..<(border + 10)]))
        // Content larger than its partition, or entries that differ from the table: refused.
        #expect(throws: FormatError.self) {
            try GPTComposedDisk(table: g, partitions: [ComposedPartition(entry: g.partitions[0], content: MemorySource([UInt8](repeating: 1, count: 16 * 512 + 1))),
                                                       ComposedPartition(entry: g.partitions[1], content: vol)])
        }
        #expect(throws: FormatError.self) { try GPTComposedDisk(table: g, partitions: [ComposedPartition(entry: g.partitions[0], content: esp)]) }
    }
}
