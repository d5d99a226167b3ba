import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

private let MiB: UInt64 = 1 << 20

/// docs/formats/vhd.md and vdi.md compare our files with qemu-img's for the same disk, field by
/// field; these tests hold the tables to the truth, and show the two files carry the same disk.
@Suite("VHD/VDI compared with qemu-img's output", .serialized)
struct VHDCompareQemuTests {
    @Test func vhdFieldByField() throws {
        let d = Scratch("vhd-cmp")
        let src = d.file("src.raw"), ours = d.file("ours.vhd"), theirs = d.file("theirs.vhd")
        let size = 10 * MiB
        try makeSourceFile(src, size: size, blockSize: 2 * MiB, chunkRatio: 1, pattern: .blockBoundaries, seed: 9)
        _ = try VHDDriver().convert(try RawFile(path: src), toPath: ours, options: NativeFormatOptions(),
                                writer: .init(sync: false))
        try run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on", src, theirs)
        let a = try VHDFile.open(path: ours), b = try VHDFile.open(path: theirs)
        // The same disk.
        #expect(try runTool(["qemu-img", "compare", "-f", "vpc", "-F", "vpc", ours, theirs]).status == 0)
        #expect(try readAll(a) == readAll(b))
        // Equal fields.
        let fa = a.footer, fb = b.footer
        #expect(fa.features == fb.features && fa.formatVersion == fb.formatVersion && fa.dataOffset == fb.dataOffset)
        #expect(fa.currentSize == fb.currentSize && fa.originalSize == fb.originalSize && fa.diskTypeRaw == fb.diskTypeRaw)
        #expect(fa.creatorHostOS == fb.creatorHostOS && fa.savedState == fb.savedState)
        let ha = a.dynamicHeader!, hb = b.dynamicHeader!
        #expect(ha.dataOffset == hb.dataOffset && ha.headerVersion == hb.headerVersion && ha.blockSize == hb.blockSize)
        #expect(ha.maxTableEntries == hb.maxTableEntries)
        // Different fields, as documented.
        #expect(VHD.fourCC(fa.creatorApp) == "win " && VHD.fourCC(fb.creatorApp) == "qem2")
        #expect(fa.creatorVersion == 0x000A_0000 && fb.creatorVersion == 0x0005_0003)
        #expect(fa.timestamp == 0 && fb.timestamp != 0)
        #expect(fa.uniqueID != fb.uniqueID)
        #expect(ha.tableOffset == 0x20000 && hb.tableOffset == 0x600)
        #expect(fa.geometry == VHDGeometry.forSize(size) && fa.geometry.sectors * 512 <= size)
        #expect(fb.geometry.sectors * 512 >= size)   // qemu's geometry covers the size
        // Blocks: ours 4 KiB-aligned data in virtual order; qemu's data one sector after its bitmap.
        for p in 0..<a.bat.count where a.bat[p] != VHD.unallocated { #expect(a.dataOffset(ofBlock: p)! % 4096 == 0) }
        let qemuData = (0..<b.bat.count).compactMap { b.dataOffset(ofBlock: $0) }.sorted()
        #expect(zip(qemuData, qemuData.dropFirst()).allSatisfy { $1 - $0 == 2 * MiB + 512 })   // packed: bitmap + data
        #expect(qemuData.contains { $0 % 4096 != 0 })
        // Without force_size qemu-img rounds the size up to the geometry.
        let rounded = d.file("rounded.vhd")
        try run("qemu-img", "convert", "-f", "raw", "-O", "vpc", src, rounded)
        let c = try VHDFile.open(path: rounded)
        #expect(VHD.fourCC(c.footer.creatorApp) == "qemu" && c.size > size && c.size == c.footer.geometry.sectors * 512)
    }

    @Test func vdiFieldByField() throws {
        let d = Scratch("vdi-cmp")
        let src = d.file("src.raw"), ours = d.file("ours.vdi"), theirs = d.file("theirs.vdi")
        let size = 10 * MiB + 512
        try makeSourceFile(src, size: size, blockSize: MiB, chunkRatio: 1, pattern: .blockBoundaries, seed: 10)
        _ = try VDIDriver().convert(try RawFile(path: src), toPath: ours, options: NativeFormatOptions(), writer: .init(sync: false))
        try run("qemu-img", "convert", "-f", "raw", "-O", "vdi", src, theirs)
        let a = try VDIFile.open(path: ours), b = try VDIFile.open(path: theirs)
        #expect(try runTool(["qemu-img", "compare", "-f", "vdi", "-F", "vdi", ours, theirs]).status == 0)
        #expect(try readAll(a) == readAll(b))
        let ha = a.header, hb = b.header
        #expect(ha.signature == hb.signature && ha.version == hb.version && ha.imageTypeRaw == hb.imageTypeRaw)
        #expect(ha.diskSize == hb.diskSize && ha.blockSize == hb.blockSize && ha.blocksInImage == hb.blocksInImage)
        #expect(ha.blocksAllocated == hb.blocksAllocated && ha.legacyGeometry == hb.legacyGeometry && ha.blockExtra == hb.blockExtra)
        #expect(ha.linkUUID == hb.linkUUID && ha.parentModificationUUID == hb.parentModificationUUID)
        #expect(ha.textString == VDI.preHeaderText && hb.textString == "<<< QEMU VM Virtual Disk Image >>>\n")
        #expect(ha.headerSize == 0x190 && hb.headerSize == 0x180)
        #expect(ha.blockMapOffset == 0x100000 && hb.blockMapOffset == 0x200)
        #expect(ha.dataOffset == 0x200000 && hb.dataOffset == 0x400)
        #expect(ha.imageUUID != hb.imageUUID)
    }

    /// `create` (the driver's default: an empty disk through the view) for each subformat.
    @Test func createEmptyDisks() throws {
        let d = Scratch("create")
        for (drv, opts, fmt, size) in [(VHDDriver() as any DiskFormatDriver, NativeFormatOptions(subformat: "dynamic"), "vpc", 64 * MiB + 512),
                                      (VHDDriver(), NativeFormatOptions(subformat: "fixed"), "vpc", 64 * MiB),
                                      (VDIDriver(), NativeFormatOptions(), "vdi", 64 * MiB + 512)] {
            let p = d.file("e-\(fmt)-\(opts.subformat ?? "").img")
            try drv.create(path: p, virtualSize: size, options: opts)
            let info = try qemuInfo(p, format: fmt)
            #expect((info["virtual-size"] as? NSNumber)?.uint64Value == size, "\(p)")
            let f = try drv.open(path: p)
            let tail = try f.read(at: size - 4096, count: 4096)
            #expect(f.size == size && tail.allSatisfy { $0 == 0 })
            #expect(!(try drv.check(path: p)).isCorrupt)
            #expect(try DiskFormatRegistry.detect(path: p)?.name == drv.name)
        }
        #expect(throws: VHDSynthesisError.self) {
            try VHDDriver().create(path: d.file("bad.vhd"), virtualSize: 64 * MiB + 512, options: NativeFormatOptions(subformat: "fixed"))
        }
    }
}
