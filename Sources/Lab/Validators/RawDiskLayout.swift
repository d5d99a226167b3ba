import BlockCore
import DiskFormats
import Foundation

/// A readable dump of a raw disk's MBR and partition table, the golden "layout" for raw disks
/// (and for the virtual disk inside a VHDX, `VHDXLayout`).
///
/// It describes outputs, it is not the oracle, so it reads sector 0 through the product's MBR
/// decoding (`MBR.StoredSector`): every field as stored, invalid ones included, with a warning
/// where `MBR.parse` would refuse the entry. The text is the golden `layout.txt` format: any
/// change of wording changes every recorded golden.
public enum RawDiskLayout {
    public static func dump(disk url: URL) throws -> String {
        let file = try RawFile(path: url.path)
        guard file.size >= UInt64(MBR.size) else { return "size \(file.size) bytes: too small for an MBR\n" }
        return dump(sector: try file.read(at: 0, count: MBR.size), diskSize: file.size)
    }

    /// The dump of sector 0 of a disk of `diskSize` bytes.
    public static func dump(sector: [UInt8], diskSize: UInt64) -> String {
        let stored: MBR.StoredSector
        do { stored = try MBR.StoredSector(sector) } catch { return "sector 0: \(error)\n" }
        var out = "disk size \(diskSize) bytes (\(diskSize / 512) sectors)\n"
        out += "boot code sha256 \(SHA256.hash(stored.bootCode).hex)\n"
        out += String(format: "disk signature 0x%08x\n", stored.diskSignature)
        out += String(format: "boot signature 0x%02x%02x\n", stored.bootSignature[0], stored.bootSignature[1])
        for (i, e) in stored.entries.enumerated() {
            guard !e.isBlank else { out += "partition \(i + 1): empty\n"; continue }
            out += String(format: "partition %d: status 0x%02x type 0x%02x start LBA %u sectors %u (%llu bytes) CHS %d/%d/%d-%d/%d/%d\n",
                          i + 1, e.status, e.type, e.startLBA, e.sectorCount, UInt64(e.sectorCount) * 512,
                          e.firstCHS.cylinder, e.firstCHS.head, e.firstCHS.sector,
                          e.lastCHS.cylinder, e.lastCHS.head, e.lastCHS.sector)
            if !e.hasValidBootIndicator { out += "  warning: status byte is neither 0x00 nor 0x80\n" }
            if UInt64(e.startLBA) + UInt64(e.sectorCount) > diskSize / 512 { out += "  warning: partition ends past the end of the disk\n" }
        }
        return out
    }
}
