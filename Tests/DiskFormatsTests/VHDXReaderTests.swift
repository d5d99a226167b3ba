import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

@Suite struct VHDXReaderQemuTests {
    /// qemu-img-made dynamic files of several block sizes, written by qemu-io across block and
    /// chunk boundaries, read by us exactly as `qemu-img convert -O raw` reads them.
    @Test(arguments: ["1M", "8M", "32M"])
    func readsQemuMadeFiles(blockSize: String) throws {
        let d = Scratch("qemu-read")
        let img = d.file("q.vhdx"), rawOut = d.file("q.raw")
        let size: UInt64 = 72 << 20 + 512  // odd: not a multiple of any block size
        try run("qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=\(blockSize)", img, String(size))
        let writes: [(UInt64, UInt64, UInt8)] = [(0, 4096, 0x11), ((1 << 20) - 512, 1024, 0x22), ((8 << 20) - 4096, 8192, 0x33),
                                                (33 << 20, 3 << 20, 0x44), (size - 512, 512, 0x55)]
        for (off, len, v) in writes {
            try run("qemu-io", "-f", "vhdx", "-c", "write -P \(v) \(off) \(len)", img)
        }
        try run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", img, rawOut)
        let f = try VHDXFile.open(path: img)
        #expect(f.size == size)
        #expect(f.blockSize == UInt32(try ByteSize.parse(blockSize)))
        let ours = try readAll(f)
        let theirs = try fileBytes(rawOut)
        #expect(ours.count == theirs.count)
        #expect(ours == theirs)
        // Extents: written ranges are data, the rest zero (QEMU marks unallocated blocks ZERO).
        let ext = try f.allExtents()
        #expect(ext.reduce(0) { $0 + $1.length } == size)
        for (off, len, _) in writes {
            #expect(ext.contains { $0.kind == .data && $0.offset <= off && $0.end >= off + len })
        }
        if f.blockSize <= 8 << 20 {  // with 32M blocks every block holds some data
            #expect(ext.contains { $0.kind == .zero && $0.offset <= 20 << 20 && $0.end > 20 << 20 })
        }
        // Concurrent reads agree with the serial one.
        let results = Locked<[Bool]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            let off = UInt64(i) * (size / 8) / 512 * 512
            let ok = (try? f.read(at: off, count: 65536)) == Array(theirs[Int(off)..<Int(off) + 65536])
            results.withLock { $0.append(ok) }
        }
        #expect(results.current == Array(repeating: true, count: 8))
    }
}

@Suite struct VHDXReaderOwnFilesTests {
    /// 4096-byte logical sectors: QEMU refuses them, so libvhdi is the independent reader.
    @Test func fourKSectorsReadByLibvhdi() throws {
        let d = Scratch("4k")
        let img = d.file("k.vhdx")
        let size: UInt64 = 20 << 20
        let f = try VHDXFile.createDynamic(path: img, virtualSize: size, blockSize: 1 << 20,
                                           logicalSectorSize: 4096, physicalSectorSize: 4096, seed: [4])
        var model = [UInt8](repeating: 0, count: Int(size))
        for (off, len, s) in [(0, 4096, 1), ((1 << 20) - 100, 300, 2), (5 << 20, 2 << 20, 3), (Int(size) - 4096, 4096, 4)] as [(Int, Int, UInt64)] {
            let data = pattern(len, seed: s)
            try data.withUnsafeBytes { try f.write(at: UInt64(off), from: $0) }
            model.replaceSubrange(off..<off + len, with: data)
        }
        try f.flush()
        #expect(try readAll(f) == model)
        let reopened = try VHDXFile.open(path: img)
        #expect(reopened.logicalSectorSize == 4096)
        #expect(try readAll(reopened) == model)
        let info = try run("vhdiinfo", img)
        #expect(info.contains("Bytes per sector\t: 4096 bytes"))
        #expect(try readWithVhdimount(img, in: d) == model)
        #expect(try VHDXCheck.run(path: img).findings.isEmpty)
    }

    /// Writes through the library into a dynamic file are read back identically by QEMU.
    @Test func writesReadByQemu() throws {
        let d = Scratch("w")
        let img = d.file("w.vhdx"), rawOut = d.file("w.raw")
        let size: UInt64 = (9 << 20) + 512
        let f = try VHDXFile.createDynamic(path: img, virtualSize: size, blockSize: 2 << 20, seed: [1])
        var model = [UInt8](repeating: 0, count: Int(size))
        for (off, len, s) in [(3, 10, 1), ((2 << 20) - 7, 20, 2), (4 << 20, 2 << 20, 3), (Int(size) - 512, 512, 4)] as [(Int, Int, UInt64)] {
            let data = pattern(len, seed: s)
            try data.withUnsafeBytes { try f.write(at: UInt64(off), from: $0) }
            model.replaceSubrange(off..<off + len, with: data)
        }
        try f.flush()
        let h = f.header
        #expect(h.sequenceNumber == 4)  // one session: two header updates
        #expect(h.dataWriteGuid != GUID.derived(seed: [], label: "data"))
        try run("qemu-img", "check", "-f", "vhdx", img)
        try run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", img, rawOut)
        #expect(try fileBytes(rawOut) == model)
        #expect(try readAll(try VHDXFile.open(path: img)) == model)
        #expect(try VHDXCheck.run(path: img).findings.isEmpty)
        // Deterministic: the same writes into the same file give the same bytes.
        let img2 = d.file("w2.vhdx")
        let g = try VHDXFile.createDynamic(path: img2, virtualSize: size, blockSize: 2 << 20, seed: [1])
        for (off, len, s) in [(3, 10, 1), ((2 << 20) - 7, 20, 2), (4 << 20, 2 << 20, 3), (Int(size) - 512, 512, 4)] as [(Int, Int, UInt64)] {
            try pattern(len, seed: s).withUnsafeBytes { try g.write(at: UInt64(off), from: $0) }
        }
        try g.flush()
        #expect(try sha(img) == sha(img2))
    }

    /// Region table copy 1 damaged: we fall back to copy 2 (QEMU refuses).
    @Test func fallsBackToRegionTableCopy2() throws {
        let d = Scratch("rt2")
        let img = d.file("r.vhdx")
        let f = try VHDXFile.createDynamic(path: img, virtualSize: 4 << 20, blockSize: 1 << 20)
        try pattern(4096, seed: 9).withUnsafeBytes { try f.write(at: 8192, from: $0) }
        let raw = try RawFile(path: img, writable: true)
        try raw.write(at: VHDX.regionTable1Offset + 20, [0xFF])
        let g = try VHDXFile.open(path: img)
        #expect(g.regionTableCopy == 2)
        #expect(try g.read(at: 8192, count: 4096) == pattern(4096, seed: 9))
        #expect(try sh(["qemu-img", "info", img]).status != 0)
    }

    /// User metadata items are kept; unknown required items are refused.
    @Test func metadataItems() throws {
        let d = Scratch("md")
        let img = d.file("m.vhdx")
        _ = try VHDXFile.createDynamic(path: img, virtualSize: 4 << 20, blockSize: 1 << 20)
        let user = VHDXRawMetadataItem(itemID: GUID("11111111-2222-3333-4444-555555555555")!, flags: 1, data: Array("plugin".utf8))
        try rewriteMetadata(img) { $0.userItems = [user] }
        let f = try VHDXFile.open(path: img)
        #expect(f.metadata.userItems == [user])
        let unknown = VHDXRawMetadataItem(itemID: GUID("99999999-2222-3333-4444-555555555555")!, flags: VHDX.metadataFlagIsRequired, data: [1])
        try rewriteMetadata(img) { $0.otherItems = [unknown] }
        #expect { _ = try VHDXFile.open(path: img) } throws: { e in
            (e as? FormatError)?.reason.contains("unknown required item") == true
        }
    }
}
