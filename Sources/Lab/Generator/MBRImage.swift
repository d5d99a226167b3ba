import BlockCore
import Foundation

/// The classic MBR of the source machine: syslinux's boot code, a disk signature and one
/// bootable primary partition (layout per the IBM PC MBR: code 0–439, signature 440–443,
/// four 16-byte entries at 446, 0x55AA at 510).
///
/// Written here, not with DiskFormats' `MBR`, on purpose: the generated disk is the oracle the
/// exposed disk is compared with (`qemu-img compare`), so a bug in the product's MBR writer must
/// not be able to appear on both sides.
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
