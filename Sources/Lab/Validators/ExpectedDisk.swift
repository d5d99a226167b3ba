import BlockCore
import Foundation

/// The raw disk an exposed disk must equal, byte for byte, built independently of the exposure
/// code from the source machine's final state:
/// - a whole-disk backup, or a volume-only backup exposed at its original partition start: the
///   source disk itself (exposure keeps the original MBR fields and disk size);
/// - a relocated volume-only backup: a zero disk of the exposed size holding the source volume at
///   the new start, FAT hidden-sectors fields set to the new start (the boot sector, and the
///   backup boot sector when it mirrors the primary), and sector 0 = the source MBR with partition 1's start LBA and sector count
///   rewritten, its CHS bytes computed for the new start and end (255 heads, 63 sectors). Nothing
///   is read back from the disk under test: the size is the original disk's when the volume still
///   fits it at the new start, else the volume's end rounded up to a MiB;
/// - a UEFI machine's volume: a GPT made by sgdisk around it (`uefiVolumeExpectation`);
/// - a reconfigured machine, or a volume exposed with a synthesized ESP: the disk as QEMU's reader serves it (the layer's bytes have no
///   independent definition), so other readers are held to agree with QEMU.
public enum ExpectedDisk {
    public static func path(machine: SourceMachine, in context: CellContext) throws -> String {
        // A synthesized ESP has no independent definition either (UEFIDiskValidator holds the rest
        // of the disk to `sourceExpectation` and judges the ESP with fsck.fat and mtools).
        if context.scenario.reconfigure || (machine.isUEFI && context.scenario.backup.esp == .synthesize) {
            // Source + reconfiguration layer: only the reconfiguration defines those bytes, so the
            // expectation is what QEMU's own VHDX reader serves (other readers must agree with it).
            guard let fe = context.frontEnd else { throw LabError.cell("expected disk", reason: "no front-end to read the exposed disk from") }
            let out = context.directory.appendingPathComponent("qemu-read-\(machine.name).raw").path
            if !FileManager.default.fileExists(atPath: out) {
                try QemuImg.convertToRaw(imageOptions: fe.imageOptions(machine: machine.name), output: out + ".partial")
                guard rename(out + ".partial", out) == 0 else { throw IOError("rename", path: out, errno: errno) }
            }
            return out
        }
        return try sourceExpectation(machine: machine, in: context)
    }

    /// The disk the exposure must equal before any reconfiguration: the source disk, or the
    /// relocated composition of its volume (the reconfiguration layer may change only the ranges
    /// it records, so outside them a reconfigured disk must equal this too).
    public static func sourceExpectation(machine: SourceMachine, in context: CellContext) throws -> String {
        guard let state = context.finalStates[machine.name] else { throw LabError.cell(machine.name, reason: "no backed-up state") }
        let spec = context.scenario.backup
        let newStart = spec.exposePartitionStart ?? machine.partitionStart
        if machine.isUEFI && spec.kind == .volumeOnly { return try uefiVolumeExpectation(machine: machine, state: state.disk, start: newStart, in: context) }
        if spec.kind == .disk || newStart == machine.partitionStart { return state.disk }
        let out = context.directory.appendingPathComponent("expected-\(machine.name).raw")
        if FileManager.default.fileExists(atPath: out.path) { return out.path }
        let source = try RawFile(path: state.disk)
        let volumeOffset = machine.partitionStart * 512
        let newOffset = newStart * 512
        // The size follows from the scenario alone, never from the disk under test: the original
        // disk's size when the volume still fits it at the new start, else the volume's end
        // rounded up to a whole MiB (docs/design.md, composition).
        let expectedSize = machine.diskSize >= newOffset + machine.volumeSize
            ? machine.diskSize : (newOffset + machine.volumeSize + 0xFFFFF) / 0x100000 * 0x100000
        let tmp = out.path + ".partial"
        let dst = try RawFile.create(path: tmp, size: expectedSize)
        var mbr = try source.read(at: 0, count: 512)
        let sectors = (machine.volumeSize + 511) / 512
        mbr.putLE32(UInt32(newStart), at: 446 + 8)
        mbr.putLE32(UInt32(sectors), at: 446 + 12)
        // CHS in the 255/63 translation, computed here (the lab's own MBR code), not copied.
        let first = MBRImage.chs(newStart), last = MBRImage.chs(newStart + sectors - 1)
        for i in 0..<3 { mbr[446 + 1 + i] = first[i]; mbr[446 + 5 + i] = last[i] }
        try dst.write(at: 0, mbr)
        let chunk = 1 << 20
        var done: UInt64 = 0
        // NTFS keeps its backup boot sector in the volume's last sector (a copy of the primary).
        let ntfsPrimary = machine.filesystem == .ntfs ? try source.read(at: volumeOffset, count: 512) : []
        while done < machine.volumeSize {
            let n = Int(min(UInt64(chunk), machine.volumeSize - done))
            var bytes = try source.read(at: volumeOffset + done, count: n)
            if done == 0 && machine.filesystem == .fat32 {
                // BPB_HiddSec (0x1C) in the boot sector, and in its backup (BPB_BkBootSec, 0x32)
                // only when the backup mirrors the primary (syslinux rewrites the primary only;
                // a backup that differs is not a copy to edit).
                let bk = Int(bytes.le16(0x32)) * Int(bytes.le16(0x0B))
                let mirrors = bk > 0 && bk + 512 <= bytes.count && Array(bytes[bk..<bk + 512]) == Array(bytes[0..<512])
                bytes.putLE32(UInt32(newStart), at: 0x1C)
                if mirrors { bytes.putLE32(UInt32(newStart), at: bk + 0x1C) }
            }
            if machine.filesystem == .ntfs {
                // Hidden sectors (0x1C, u32) in the primary and, when it mirrors it, the backup.
                if done == 0 { bytes.putLE32(UInt32(newStart), at: 0x1C) }
                if done + UInt64(n) == machine.volumeSize, n >= 512, Array(bytes[(n - 512)...]) == ntfsPrimary {
                    bytes.putLE32(UInt32(newStart), at: n - 512 + 0x1C)
                }
            }
            if bytes.contains(where: { $0 != 0 }) { try dst.write(at: newOffset + done, bytes) }
            done += UInt64(n)
        }
        try dst.flush()
        guard rename(tmp, out.path) == 0 else { throw IOError("rename", path: out.path, errno: errno) }
        return out.path
    }

    /// A UEFI machine's root volume exposed alone: a zero disk of the source's size with a GPT
    /// made by sgdisk (not BootLab's writer) holding only the root as partition 2 — the source's
    /// disk GUID, the partition's unique GUID, type and name, from the lab's own seed — and the
    /// volume at its start. A synthesized ESP is not in it: its bytes have no independent
    /// definition, so `UEFIDiskValidator` compares everything outside the ESP and the GPT
    /// structures, and judges the ESP with fsck.fat and mtools.
    static func uefiVolumeExpectation(machine: SourceMachine, state: String, start: UInt64, in context: CellContext) throws -> String {
        let out = context.directory.appendingPathComponent("expected-\(machine.name).raw")
        if FileManager.default.fileExists(atPath: out.path) { return out.path }
        let tmp = out.path + ".partial"
        let dst = try RawFile.create(path: tmp, size: machine.diskSize)
        try dst.flush()
        let ids = DiskGenerator.uefiGUIDs(machine, seed: context.scenario.seed)
        // LBAs in the machine's sectors (a 4Kn disk: sgdisk through a 4096-byte loop device).
        let ss = machine.sectorSize
        let end = start + machine.volumeSize / UInt64(ss) - 1
        try GPTImage.withDevice(tmp, sectorSize: ss) { dev in
            try Shell.run("sgdisk", ["--disk-guid=\(ids.disk)", "-n", "2:\(start):\(end)", "-t", "2:8300", "-u", "2:\(ids.root)",
                                     "-c", "2:bootlab root", dev])
        }
        // The source volume at its start (dd, sparse: this runs in debug builds too).
        try Shell.run("dd", ["if=\(state)", "of=\(tmp)", "bs=\(ss)", "skip=\(machine.partitionStart)", "seek=\(start)",
                             "count=\(machine.volumeSize / UInt64(ss))", "conv=sparse,notrunc", "status=none"])
        guard rename(tmp, out.path) == 0 else { throw IOError("rename", path: out.path, errno: errno) }
        return out.path
    }
}
