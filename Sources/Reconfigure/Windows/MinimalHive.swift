import BlockCore

/// A minimal, valid, empty registry hive (8 KiB): base block, one hive bin holding the root key
/// and its security record. hivex can edit hives but cannot create one, so this is the seed.
/// Layout per the Windows registry file format (regf) as documented by libyal/libregf and hivex.
public enum MinimalHive {
    public static func bytes(rootName: String = "ROOT") -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 0x2000)
        // Base block: "regf", sequence numbers equal (clean), version 1.3, primary file, format 1.
        out.replaceSubrange(0..<4, with: Array("regf".utf8))
        out.putLE32(1, at: 0x04)
        out.putLE32(1, at: 0x08)
        out.putLE32(1, at: 0x14)   // major
        out.putLE32(3, at: 0x18)   // minor
        out.putLE32(0, at: 0x1C)   // type: primary
        out.putLE32(1, at: 0x20)   // format: direct memory load
        out.putLE32(0x20, at: 0x24) // root cell offset (relative to the first bin)
        out.putLE32(0x1000, at: 0x28) // hive bins data size
        out.putLE32(1, at: 0x2C)   // clustering factor
        var checksum: UInt32 = 0
        for i in 0..<127 { checksum ^= out.le32(i * 4) }
        out.putLE32(checksum, at: 0x1FC)

        // Hive bin at 0x1000: "hbin", offset 0, size 0x1000.
        let bin = 0x1000
        out.replaceSubrange(bin..<bin + 4, with: Array("hbin".utf8))
        out.putLE32(0, at: bin + 4)
        out.putLE32(0x1000, at: bin + 8)

        // Root key node (nk) at bin offset 0x20.
        let name = Array(rootName.utf8)
        let nkSize = align8(4 + 76 + name.count)
        let nk = bin + 0x20
        let skOffset = 0x20 + nkSize
        out.putLE32(UInt32(bitPattern: -Int32(nkSize)), at: nk)
        out.replaceSubrange(nk + 4..<nk + 6, with: Array("nk".utf8))
        out.putLE16(0x2C, at: nk + 6)          // KEY_HIVE_ENTRY | KEY_NO_DELETE | KEY_COMP_NAME
        out.putLE32(0xFFFF_FFFF, at: nk + 0x14) // parent: none
        out.putLE32(0xFFFF_FFFF, at: nk + 0x20) // subkey list: none
        out.putLE32(0xFFFF_FFFF, at: nk + 0x24) // volatile subkey list: none
        out.putLE32(0xFFFF_FFFF, at: nk + 0x2C) // value list: none
        out.putLE32(UInt32(skOffset), at: nk + 0x30)
        out.putLE32(0xFFFF_FFFF, at: nk + 0x34) // class name: none
        out.putLE16(UInt16(name.count), at: nk + 0x4C)
        out.replaceSubrange(nk + 0x50..<nk + 0x50 + name.count, with: name)

        // Security record (sk): a self-relative descriptor with no owner, group or ACLs.
        let descriptor: [UInt8] = [1, 0, 0x04, 0x80] + [UInt8](repeating: 0, count: 16)
        let skSize = align8(4 + 20 + descriptor.count)
        let sk = bin + skOffset
        out.putLE32(UInt32(bitPattern: -Int32(skSize)), at: sk)
        out.replaceSubrange(sk + 4..<sk + 6, with: Array("sk".utf8))
        out.putLE32(UInt32(skOffset), at: sk + 8)   // flink: itself (the only record)
        out.putLE32(UInt32(skOffset), at: sk + 12)  // blink
        out.putLE32(1, at: sk + 16)                 // reference count: the root key
        out.putLE32(UInt32(descriptor.count), at: sk + 20)
        out.replaceSubrange(sk + 24..<sk + 24 + descriptor.count, with: descriptor)

        // The rest of the bin is one free cell (positive size).
        let free = skOffset + skSize
        out.putLE32(UInt32(0x1000 - free), at: bin + free)
        return out
    }

    static func align8(_ n: Int) -> Int { (n + 7) & ~7 }
}
