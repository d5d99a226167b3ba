import BlockCore
import Foundation

/// The classic MBR of the source machine: syslinux's boot code, a disk signature and one
/// bootable primary partition (layout per the IBM PC MBR: code 0–439, signature 440–443,
/// four 16-byte entries at 446, 0x55AA at 510).
struct MBRImage {
    var bootCode: [UInt8]
    var signature: UInt32
    var partitionType: UInt8
    var startLBA: UInt32
    var sectorCount: UInt32

    func bytes() -> [UInt8] {
        var s = [UInt8](repeating: 0, count: 512)
        for (i, b) in bootCode.prefix(440).enumerated() { s[i] = b }
        s.putLE32(signature, at: 440)
        var entry: [UInt8] = [0x80] + Self.chs(UInt64(startLBA)) + [partitionType] + Self.chs(UInt64(startLBA) + UInt64(sectorCount) - 1)
        entry.appendLE32(startLBA)
        entry.appendLE32(sectorCount)
        for (i, b) in entry.enumerated() { s[446 + i] = b }
        s[510] = 0x55
        s[511] = 0xAA
        return s
    }

    /// CHS in the 255-head, 63-sector geometry BIOSes assume; past cylinder 1023 the tuple is
    /// saturated (1023/254/63) and only the LBA fields count.
    static func chs(_ lba: UInt64) -> [UInt8] {
        let (heads, sectors): (UInt64, UInt64) = (255, 63)
        var c = lba / (heads * sectors)
        var h = (lba / sectors) % heads
        var s = lba % sectors + 1
        if c > 1023 { (c, h, s) = (1023, 254, 63) }
        return [UInt8(h), UInt8(s | ((c >> 2) & 0xC0)), UInt8(c & 0xFF)]
    }
}

/// A readable dump of a disk's MBR and partition table, the golden "layout" for raw disks.
public enum MBRLayout {
    public static func dump(disk url: URL) throws -> String {
        let file = try RawFile(path: url.path)
        var sector = [UInt8](repeating: 0, count: 512)
        guard file.size >= 512 else { return "size \(file.size) bytes: too small for an MBR\n" }
        try sector.withUnsafeMutableBytes { try file.read(at: 0, into: $0) }
        return dump(sector: sector, diskSize: file.size)
    }

    /// The dump of sector 0 of a disk of `diskSize` bytes.
    public static func dump(sector: [UInt8], diskSize: UInt64) -> String {
        precondition(sector.count >= 512, "an MBR is one 512-byte sector")
        var out = "disk size \(diskSize) bytes (\(diskSize / 512) sectors)\n"
        out += "boot code sha256 \(SHA256.hash(Array(sector[0..<440])).hex)\n"
        out += String(format: "disk signature 0x%08x\n", sector.le32(440))
        out += String(format: "boot signature 0x%02x%02x\n", sector[510], sector[511])
        for i in 0..<4 {
            let e = Array(sector[(446 + i * 16)..<(446 + i * 16 + 16)])
            guard e.contains(where: { $0 != 0 }) else { out += "partition \(i + 1): empty\n"; continue }
            let start = e.le32(8), count = e.le32(12)
            out += String(format: "partition %d: status 0x%02x type 0x%02x start LBA %u sectors %u (%llu bytes) CHS %d/%d/%d-%d/%d/%d\n",
                          i + 1, e[0], e[4], start, count, UInt64(count) * 512,
                          Int(e[3]) | (Int(e[2] & 0xC0) << 2), Int(e[1]), Int(e[2] & 0x3F),
                          Int(e[7]) | (Int(e[6] & 0xC0) << 2), Int(e[5]), Int(e[6] & 0x3F))
            if e[0] & 0x7F != 0 { out += "  warning: status byte is neither 0x00 nor 0x80\n" }
            if UInt64(start) + UInt64(count) > diskSize / 512 { out += "  warning: partition ends past the end of the disk\n" }
        }
        return out
    }
}
