import BlockCore

/// Patches a relocated volume's boot sector so its BIOS Parameter Block names the new partition
/// start. FAT and NTFS boot code computes disk addresses as "hidden sectors + volume sector", so a
/// volume moved from LBA 63 to 2048 must have BPB_HiddSec (offset 0x1C, u32) updated — in an
/// overlay, never in the backup. FAT32 keeps a backup boot sector (BPB_BkBootSec, offset 0x32)
/// and NTFS one in the volume's last sector; both are patched when they mirror the primary.
public enum BootSectorPatch {
    public enum FileSystem: String, Sendable, Codable { case fat, ntfs }

    /// Identifies a FAT or NTFS boot sector (nil for anything else, e.g. ext4).
    public static func fileSystem(ofBootSector s: [UInt8]) -> FileSystem? {
        guard s.count >= 512, s[510] == 0x55, s[511] == 0xAA else { return nil }
        if Array(s[3..<11]) == Array("NTFS    ".utf8) { return .ntfs }
        let jumpOK = s[0] == 0xEB || s[0] == 0xE9
        let bps = Int(s.le16(0x0B))
        guard jumpOK, [512, 1024, 2048, 4096].contains(bps), s[0x0D] != 0 else { return nil }
        if Array(s[0x52..<0x57]) == Array("FAT32".utf8) || Array(s[0x36..<0x39]) == Array("FAT".utf8) { return .fat }
        return nil
    }

    /// The patches (volume-relative offsets) that set hidden sectors to `newStartLBA`; empty when
    /// the volume has no FAT/NTFS boot sector or already says so.
    public static func patches(volume: any BlockSource, newStartLBA: UInt64) throws -> [PatchedSource.Patch] {
        guard volume.size >= 512, newStartLBA <= UInt64(UInt32.max) else { return [] }
        let boot = try volume.read(at: 0, count: 512)
        guard let fs = fileSystem(ofBootSector: boot) else { return [] }
        let field = UInt64(0x1C)
        var value = [UInt8](repeating: 0, count: 4)
        value.putLE32(UInt32(newStartLBA), at: 0)
        guard Array(boot[0x1C..<0x20]) != value else { return [] }
        var out = [PatchedSource.Patch(offset: field, bytes: value)]
        let bps = UInt64(boot.le16(0x0B))
        var backupSector: UInt64?
        switch fs {
        case .fat:
            if Array(boot[0x52..<0x57]) == Array("FAT32".utf8) {
                let bk = UInt64(boot.le16(0x32))
                if bk != 0 && bk != 0xFFFF { backupSector = bk }
            }
        case .ntfs:
            let total = boot.le64(0x28)
            if total > 0 { backupSector = total }
        }
        if let bk = backupSector {
            let (off, overflow) = bk.multipliedReportingOverflow(by: bps)
            if !overflow, off + 512 <= volume.size {
                let copy = try volume.read(at: off, count: 512)
                // Only a true mirror of the primary is patched; anything else is left alone.
                if copy == boot { out.append(PatchedSource.Patch(offset: off + field, bytes: value)) }
            }
        }
        return out
    }
}
