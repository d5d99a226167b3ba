import BlockCore
import Foundation

/// The raw disk an exposed disk must equal, byte for byte, built independently of the exposure
/// code from the source machine's final state:
/// - a whole-disk backup, or a volume-only backup exposed at its original partition start: the
///   source disk itself (exposure keeps the original MBR fields and disk size);
/// - a relocated volume-only backup: a zero disk of the exposed size holding the source volume at
///   the new start, FAT hidden-sectors fields set to the new start (the boot sector, and the
///   backup boot sector when it mirrors the primary), and sector 0 = the source MBR with partition 1's start LBA and sector count
///   rewritten. The entry's CHS bytes are taken from the exposed disk (LBA is what BIOS and Linux
///   use; CHS conventions are not part of the contract);
/// - a reconfigured machine: the disk as QEMU's VHDX reader serves it (the layer's bytes have no
///   independent definition), so other readers are held to agree with QEMU.
public enum ExpectedDisk {
    public static func path(machine: SourceMachine, in context: CellContext) throws -> String {
        if context.scenario.reconfigure {
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
        guard let state = context.finalStates[machine.name] else { throw LabError.cell(machine.name, reason: "no backed-up state") }
        let spec = context.scenario.backup
        let newStart = spec.exposePartitionStart ?? machine.partitionStart
        if spec.kind == .disk || newStart == machine.partitionStart { return state.disk }
        let out = context.directory.appendingPathComponent("expected-\(machine.name).raw")
        if FileManager.default.fileExists(atPath: out.path) { return out.path }
        guard let fe = context.frontEnd else { throw LabError.cell("expected disk", reason: "no front-end to read the exposed size from") }
        let info = try QemuImg.info(imageOptions: fe.imageOptions(machine: machine.name))
        let exposedSector0 = try QemuImg.readBytes(imageOptions: fe.imageOptions(machine: machine.name), offset: 0, count: 512, scratch: context.directory)
        let source = try RawFile(path: state.disk)
        let volumeOffset = machine.partitionStart * 512
        let newOffset = newStart * 512
        guard newOffset + machine.volumeSize <= info.virtualSize else {
            throw LabError.cell(machine.name, reason: "the exposed disk (\(info.virtualSize) bytes) cannot hold the volume at LBA \(newStart)")
        }
        let tmp = out.path + ".partial"
        let dst = try RawFile.create(path: tmp, size: info.virtualSize)
        var mbr = try source.read(at: 0, count: 512)
        mbr.putLE32(UInt32(newStart), at: 446 + 8)
        mbr.putLE32(UInt32((machine.volumeSize + 511) / 512), at: 446 + 12)
        for i in [1, 2, 3, 5, 6, 7] { mbr[446 + i] = exposedSector0[446 + i] }
        try dst.write(at: 0, mbr)
        let chunk = 1 << 20
        var done: UInt64 = 0
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
            if bytes.contains(where: { $0 != 0 }) { try dst.write(at: newOffset + done, bytes) }
            done += UInt64(n)
        }
        try dst.flush()
        guard rename(tmp, out.path) == 0 else { throw IOError("rename", path: out.path, errno: errno) }
        return out.path
    }
}
