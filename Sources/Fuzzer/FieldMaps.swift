/// Field maps of the formats whose drivers live elsewhere, written from the public specs: the
/// VMDK sparse extent header (VMware's "Virtual Disk Format 5.0"), the VHD footer and dynamic
/// disk header (Microsoft's "Virtual Hard Disk Image Format Specification"), the qcow2 header
/// (QEMU's docs/interop/qcow2.txt) and the VDI header (VirtualBox's VDICore.h layout, v1.1).
public enum FieldMaps {
    /// VMDK hosted sparse extent: header at 0, grain directory at `gdOffset` sectors. No checksums.
    public static let vmdk: @Sendable ([UInt8]) -> StructureMap = { b in
        var m = StructureMap()
        let s = "sparse header"
        m.add(Field(s, "magicNumber", 0, 4, .signature))
        m.add(Field(s, "version", 4, 4, .version))
        m.add(Field(s, "flags", 8, 4, .flags))
        m.add(Field(s, "capacity", 12, 8, .size, unit: 512))
        m.add(Field(s, "grainSize", 20, 8, .size, unit: 512))
        m.add(Field(s, "descriptorOffset", 28, 8, .offset, unit: 512))
        m.add(Field(s, "descriptorSize", 36, 8, .size, unit: 512))
        m.add(Field(s, "numGTEsPerGT", 44, 4, .count))
        m.add(Field(s, "rgdOffset", 48, 8, .offset, unit: 512))
        m.add(Field(s, "gdOffset", 56, 8, .offset, unit: 512))
        m.add(Field(s, "overHead", 64, 8, .size, unit: 512))
        m.add(Field(s, "uncleanShutdown", 72, 1, .flags))
        m.add(Field(s, "compressAlgorithm", 77, 2, .state))
        m.structure(0..<512)
        for (name, at) in [("grain directory", 56), ("redundant grain directory", 48)] {
            let gd = bounded(b.value(at: at, width: 8, endian: .little) &* 512)
            guard gd > 0, gd < b.count else { continue }
            m.structure(gd..<gd + 512)
            for i in 0..<min(16, (b.count - gd) / 4) {
                m.add(Field(name, "entry \(i)", gd + 4 * i, 4, .offset, unit: 512))
                let gt = Int(b.value(at: gd + 4 * i, width: 4, endian: .little)) * 512
                if i < 2, gt > 0, gt + 16 <= b.count {
                    m.structure(gt..<gt + 2048)
                    for j in 0..<4 { m.add(Field("grain table \(i)", "entry \(j)", gt + 4 * j, 4, .offset, unit: 512)) }
                }
            }
        }
        return m
    }

    /// VHD: footer in the last 512 bytes (and its copy at 0 for dynamic disks), dynamic header at
    /// the footer's data offset, BAT at the header's table offset. Big-endian; one's-complement sums.
    public static let vhd: @Sendable ([UInt8]) -> StructureMap = { b in
        var m = StructureMap()
        func footer(_ f: Int, _ s: String) {
            m.add(Field(s, "Cookie", f, 8, .signature, .big))
            m.add(Field(s, "Features", f + 8, 4, .flags, .big))
            m.add(Field(s, "FileFormatVersion", f + 12, 4, .version, .big))
            m.add(Field(s, "DataOffset", f + 16, 8, .offset, .big))
            m.add(Field(s, "OriginalSize", f + 40, 8, .size, .big))
            m.add(Field(s, "CurrentSize", f + 48, 8, .size, .big))
            m.add(Field(s, "DiskGeometry", f + 56, 4, .size, .big))
            m.add(Field(s, "DiskType", f + 60, 4, .state, .big))
            m.add(Field(s, "Checksum", f + 64, 4, .checksum, .big))
            m.add(Field(s, "UniqueId", f + 68, 16, .guid, .big))
            m.checksums.append(ChecksumSpec(s, .onesComplement, covered: f..<f + 512, field: f + 64, endian: .big))
            m.structure(f..<f + 512)
        }
        guard b.count >= 512 else { return m }
        let last = b.count - 512 - (b.count % 512 == 511 ? 511 : 0)
        let dynamic = b.count >= 1024 && Array(b[0..<8]) == Array("conectix".utf8)
        if dynamic { footer(0, "footer copy") }
        footer(last, "footer")
        let dh = bounded(b.value(at: dynamic ? 16 : last + 16, width: 8, endian: .big))
        if dh > 0, dh < UInt64.max, dh + 1024 <= b.count {
            let s = "dynamic header"
            m.add(Field(s, "Cookie", dh, 8, .signature, .big))
            m.add(Field(s, "DataOffset", dh + 8, 8, .offset, .big))
            m.add(Field(s, "TableOffset", dh + 16, 8, .offset, .big))
            m.add(Field(s, "HeaderVersion", dh + 24, 4, .version, .big))
            m.add(Field(s, "MaxTableEntries", dh + 28, 4, .count, .big))
            m.add(Field(s, "BlockSize", dh + 32, 4, .size, .big))
            m.add(Field(s, "ParentUniqueId", dh + 40, 16, .guid, .big))
            for l in 0..<2 {
                let e = dh + 576 + 24 * l
                m.add(Field(s, "locator \(l).PlatformCode", e, 4, .state, .big))
                m.add(Field(s, "locator \(l).DataLength", e + 8, 4, .size, .big))
                m.add(Field(s, "locator \(l).DataOffset", e + 16, 8, .offset, .big))
            }
            m.checksums.insert(ChecksumSpec(s, .onesComplement, covered: dh..<dh + 1024, field: dh + 36, endian: .big), at: 0)
            m.structure(dh..<dh + 1024)
            let bat = bounded(b.value(at: dh + 16, width: 8, endian: .big))
            if bat > 0, bat < b.count {
                m.structure(bat..<bat + 512)
                for i in 0..<min(16, (b.count - bat) / 4) { m.add(Field("BAT", "entry \(i)", bat + 4 * i, 4, .offset, .big, unit: 512)) }
            }
        }
        return m
    }

    /// qcow2: big-endian header; L1 table and refcount table from it. No checksums.
    public static let qcow2: @Sendable ([UInt8]) -> StructureMap = { b in
        var m = StructureMap()
        let s = "header"
        m.add(Field(s, "magic", 0, 4, .signature, .big))
        m.add(Field(s, "version", 4, 4, .version, .big))
        m.add(Field(s, "backing_file_offset", 8, 8, .offset, .big))
        m.add(Field(s, "backing_file_size", 16, 4, .size, .big))
        m.add(Field(s, "cluster_bits", 20, 4, .size, .big))
        m.add(Field(s, "size", 24, 8, .size, .big))
        m.add(Field(s, "crypt_method", 32, 4, .state, .big))
        m.add(Field(s, "l1_size", 36, 4, .count, .big))
        m.add(Field(s, "l1_table_offset", 40, 8, .offset, .big))
        m.add(Field(s, "refcount_table_offset", 48, 8, .offset, .big))
        m.add(Field(s, "refcount_table_clusters", 56, 4, .count, .big))
        m.add(Field(s, "nb_snapshots", 60, 4, .count, .big))
        m.add(Field(s, "snapshots_offset", 64, 8, .offset, .big))
        m.add(Field(s, "incompatible_features", 72, 8, .flags, .big))
        m.add(Field(s, "compatible_features", 80, 8, .flags, .big))
        m.add(Field(s, "autoclear_features", 88, 8, .flags, .big))
        m.add(Field(s, "refcount_order", 96, 4, .size, .big))
        m.add(Field(s, "header_length", 100, 4, .size, .big))
        m.structure(0..<104)
        for (name, at) in [("L1 table", 40), ("refcount table", 48)] {
            let t = bounded(b.value(at: at, width: 8, endian: .big))
            guard t > 0, t < b.count else { continue }
            m.structure(t..<t + 512)
            for i in 0..<min(8, (b.count - t) / 8) {
                m.add(Field(name, "entry \(i)", t + 8 * i, 8, .offset, .big))
                let l2 = bounded(b.value(at: t + 8 * i, width: 8, endian: .big) & 0x00ff_ffff_ffff_fe00)
                if name == "L1 table", i < 2, l2 > 0, l2 + 64 <= b.count {
                    m.structure(l2..<l2 + 512)
                    for j in 0..<4 { m.add(Field("L2 table \(i)", "entry \(j)", l2 + 8 * j, 8, .offset, .big)) }
                }
            }
        }
        return m
    }

    /// VDI: little-endian header after a 64-byte text; block map at offsetBlocks. No checksums.
    public static let vdi: @Sendable ([UInt8]) -> StructureMap = { b in
        var m = StructureMap()
        let s = "header"
        m.add(Field(s, "signature", 0x40, 4, .signature))
        m.add(Field(s, "version", 0x44, 4, .version))
        m.add(Field(s, "cbHeader", 0x48, 4, .size))
        m.add(Field(s, "imageType", 0x4C, 4, .state))
        m.add(Field(s, "flags", 0x50, 4, .flags))
        m.add(Field(s, "offsetBlocks", 0x154, 4, .offset))
        m.add(Field(s, "offsetData", 0x158, 4, .offset))
        m.add(Field(s, "sectorSize", 0x168, 4, .size))
        m.add(Field(s, "diskSize", 0x170, 8, .size))
        m.add(Field(s, "blockSize", 0x178, 4, .size))
        m.add(Field(s, "blockExtra", 0x17C, 4, .size))
        m.add(Field(s, "blocks", 0x180, 4, .count))
        m.add(Field(s, "blocksAllocated", 0x184, 4, .count))
        m.add(Field(s, "uuidCreate", 0x188, 16, .guid))
        m.add(Field(s, "uuidModify", 0x198, 16, .guid))
        m.add(Field(s, "uuidLinkage", 0x1A8, 16, .guid))
        m.structure(0..<0x200)
        let map = Int(b.value(at: 0x154, width: 4, endian: .little))
        if map > 0, map < b.count {
            m.structure(map..<map + 512)
            for i in 0..<min(16, (b.count - map) / 4) { m.add(Field("block map", "entry \(i)", map + 4 * i, 4, .state)) }
        }
        let data = Int(b.value(at: 0x158, width: 4, endian: .little))
        if data > 0, data < b.count { m.boundaries.append(data) }
        return m
    }
}
