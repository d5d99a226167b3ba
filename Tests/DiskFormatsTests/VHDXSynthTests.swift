import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// A disk of `size` bytes whose `dataRanges` hold a position-derived pattern and whose other
/// bytes are `.absent` zeros: huge sparse disks at no cost.
struct PatternSource: BlockSource {
    let size: UInt64
    let dataRanges: [Range<UInt64>]   // sorted, disjoint

    static func byte(at o: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: (o &* 0x9E37_79B1) >> 13) | 1 }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        for i in 0..<buffer.count {
            let o = offset + UInt64(i)
            buffer[i] = dataRanges.contains { $0.contains(o) } ? PatternSource.byte(at: o) : 0
        }
    }

    func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        var out: [Extent] = []
        var pos = r.lowerBound
        for d in dataRanges {
            let c = d.clamped(to: pos..<r.upperBound)
            guard !c.isEmpty else { continue }
            if c.lowerBound > pos { out.append(Extent(offset: pos, length: c.lowerBound - pos, kind: .absent)) }
            out.append(Extent(offset: c.lowerBound, length: UInt64(c.count), kind: .data))
            pos = c.upperBound
        }
        if pos < r.upperBound { out.append(Extent(offset: pos, length: r.upperBound - pos, kind: .absent)) }
        return coalesce(out)
    }
}

private let MiB: UInt64 = 1 << 20

@Suite("VHDX synthesizer structures")
struct VHDXSynthStructureTests {
    /// vhdx-notes §9a golden CRCs: headers with all-zero GUIDs, and the Hyper-V region table.
    @Test func goldenChecksums() {
        let h1 = VHDXSkeleton.header(sequence: 1, fileWrite: .zero, dataWrite: .zero)
        let h2 = VHDXSkeleton.header(sequence: 2, fileWrite: .zero, dataWrite: .zero)
        #expect(h1.le32(4) == 0xF1FD_4713)
        #expect(h2.le32(4) == 0x7318_957B)
        let rt = VHDXSkeleton.regionTable(batLength: MiB)
        #expect(rt.le32(4) == 0xC66B_8CAE)
        // Our region table puts BAT (Required) first at 3 MiB and metadata at 2 MiB.
        #expect(Array(rt[16..<32]) == VHDX.batRegion.bytes)
        #expect(rt.le64(32) == 0x300000 && rt.le32(40) == 0x100000 && rt.le32(44) == 1)
        #expect(Array(rt[48..<64]) == VHDX.metadataRegion.bytes)
        #expect(rt.le64(64) == 0x200000 && rt.le32(72) == 0x100000 && rt.le32(76) == 1)
    }

    @Test func skeletonFollowsTheRecipe() throws {
        let src = PatternSource(size: 64 * MiB, dataRanges: [3 * MiB..<3 * MiB + 10, 40 * MiB..<41 * MiB])
        let view = try VHDXView(source: src, options: .init(blockSize: 2 << 20))
        let sk = try view.skeleton()
        #expect(UInt64(sk.count) == view.payloadStart)
        #expect(view.payloadStart == 4 * MiB && view.batLength == MiB)
        #expect(Array(sk[0..<8]) == Array("vhdxfile".utf8))
        let creator = Array(BootLabVersion.creator.utf16)
        #expect((0..<creator.count).allSatisfy { sk.le16(8 + 2 * $0) == creator[$0] })
        for (at, seq) in [(0x10000, UInt64(1)), (0x20000, UInt64(2))] {
            let h = Array(sk[at..<at + 4096])
            #expect(Array(h[0..<4]) == Array("head".utf8))
            #expect(h.le64(8) == seq)
            #expect(CRC32C.checksum(h, zeroingFieldAt: 4) == h.le32(4))
            #expect(Array(h[16..<32]) == GUID.derived(seed: [UInt8](repeating: 0, count: 16), label: "file").bytes)
            #expect(Array(h[48..<64]) == GUID.zero.bytes)
            #expect(h.le16(66) == 1 && h.le32(68) == 0x100000 && h.le64(72) == 0x100000)
        }
        #expect(Array(sk[0x30000..<0x40000]) == Array(sk[0x40000..<0x50000]))
        #expect(sk.le32(0x30004) == 0xC66B_8CAE)
        // Log: all zeros.
        #expect(sk[0x100000..<0x200000].allSatisfy { $0 == 0 })
        // Metadata: FP, VS, VID, LSS, PSS packed from 0x10000.
        let m = 0x200000
        #expect(Array(sk[m..<m + 8]) == Array("metadata".utf8))
        #expect(sk.le16(m + 10) == 5)
        let expected: [(GUID, UInt32, UInt32, UInt32)] = [
            (VHDX.fileParametersItem, 0x10000, 8, 4), (VHDX.virtualDiskSizeItem, 0x10008, 8, 6),
            (VHDX.virtualDiskIDItem, 0x10010, 16, 6), (VHDX.logicalSectorSizeItem, 0x10020, 4, 6),
            (VHDX.physicalSectorSizeItem, 0x10024, 4, 6),
        ]
        for (i, e) in expected.enumerated() {
            let at = m + 32 + 32 * i
            #expect(Array(sk[at..<at + 16]) == e.0.bytes)
            #expect(sk.le32(at + 16) == e.1 && sk.le32(at + 20) == e.2 && sk.le32(at + 24) == e.3)
        }
        #expect(sk.le32(m + 0x10000) == 2 << 20 && sk.le32(m + 0x10004) == 0)
        #expect(sk.le64(m + 0x10008) == 64 * MiB)
        #expect(Array(sk[m + 0x10010..<m + 0x10020]) == view.virtualDiskID.bytes)
        #expect(sk.le32(m + 0x10020) == 512 && sk.le32(m + 0x10024) == 4096)
        // BAT: block 1 (3 MiB) and block 20 (40 MiB) allocated in order, the rest ZERO with offset 0.
        let bat = 0x300000
        #expect(view.geometry.totalEntries == 32)
        for p in 0..<32 {
            let e = sk.le64(bat + 8 * p)
            switch p {
            case 1: #expect(e == (4 * MiB) | 6)
            case 20: #expect(e == (6 * MiB) | 6)
            default: #expect(e == 2, "entry \(p)")
            }
        }
        #expect(sk[(bat + 8 * 32)...].allSatisfy { $0 == 0 })
        #expect(view.size == 8 * MiB)
        #expect(view.fileOffset(ofBlock: 20) == 6 * MiB && view.fileOffset(ofBlock: 2) == nil)
    }

    /// 1 MiB blocks with 512-byte sectors: CR = 4096, so a sector-bitmap entry follows every
    /// 4096 payload entries and block p sits at index p + p/4096.
    @Test func batInterleavesSectorBitmapEntries() throws {
        let v = 8 * 1024 * MiB + 4 * MiB + 512
        let data: [Range<UInt64>] = [4095 * MiB..<4095 * MiB + 1, 4096 * MiB..<4096 * MiB + 1, 8192 * MiB + 7..<8192 * MiB + 9, v - 1..<v]
        let view = try VHDXView(source: PatternSource(size: v, dataRanges: data), options: .init(blockSize: 1 << 20))
        let g = view.geometry
        #expect(g.chunkRatio == 4096 && g.payloadBlocks == 8197)
        #expect(g.totalEntries == 8197 + 2)
        #expect(view.batLength == MiB)
        let d = view.payloadStart
        #expect(view.batEntry(4095) == d | 6)
        #expect(view.batEntry(4096) == 0)                    // SB entry of chunk 0
        #expect(view.batEntry(4097) == (d + MiB) | 6)        // block 4096
        #expect(view.batEntry(8193) == 0)                    // SB entry of chunk 1
        #expect(view.batEntry(8194) == (d + 2 * MiB) | 6)    // block 8192
        #expect(view.batEntry(8198) == (d + 3 * MiB) | 6)    // block 8196, the partial last one
        #expect(view.batEntry(8195) == 2)
        // The BAT bytes served by read() agree with batEntry, across a read that starts mid-entry.
        let raw = try view.read(at: view.batOffset + 4095 * 8 + 3, count: 8 * 4 + 2)
        let full = [UInt8](repeating: 0, count: 3) + raw + [UInt8](repeating: 0, count: 3)
        for k in 1..<4 { #expect(full.le64(8 * k) == view.batEntry(4095 + UInt64(k))) }
        // Payload of the last block: 1 data byte, then zero padding to a whole block.
        let last = try view.read(at: d + 3 * MiB, count: Int(MiB))
        #expect(last[511] == PatternSource.byte(at: v - 1))
        #expect(last[0..<511].allSatisfy { $0 == 0 } && last[512...].allSatisfy { $0 == 0 })
        #expect(view.size == d + 4 * MiB)
    }

    @Test func userMetadataItemsAreStoredWithIsUser() throws {
        let id = try #require(GUID("5A3B0C11-2222-4333-8444-555566667777"))
        let second = try #require(GUID("5A3B0C11-2222-4333-8444-555566667778"))
        let payload = Array("plugin pointer: /backups/pc1.bli".utf8)
        let src = PatternSource(size: 8 * MiB, dataRanges: [0..<512])
        let view = try VHDXView(source: src, options: .init(userMetadata: [
            VHDXUserMetadataItem(id: id, bytes: payload), VHDXUserMetadataItem(id: second, bytes: [1, 2, 3], flags: 2),
        ]))
        let m = try view.read(at: view.metadataOffset, count: 0x20000)
        #expect(m.le16(10) == 7)
        let at = 32 + 32 * 5
        #expect(Array(m[at..<at + 16]) == id.bytes)
        let off = Int(m.le32(at + 16)), len = Int(m.le32(at + 20))
        #expect(off == 0x10028 && len == payload.count && m.le32(at + 24) == 1)
        #expect(Array(m[off..<off + len]) == payload)
        let at2 = at + 32
        #expect(m.le32(at2 + 16) == 0x10048 && m.le32(at2 + 20) == 3 && m.le32(at2 + 24) == 3)
        #expect(view.layoutDump().contains("user"))

        // qemu-img still opens it: user items without IsRequired are ignored by QEMU.
        let dir = Scratch("user")
        try SparseImageWriter.write(view, toPath: dir.file("u.vhdx"), options: .init(sync: false))
        let check = try runTool(["qemu-img", "check", "-f", "vhdx", dir.file("u.vhdx")])
        #expect(check.status == 0, "\(check.stderr)")
        let info = try runTool(["vhdiinfo", dir.file("u.vhdx")])
        #expect(info.status == 0, "vhdiinfo: \(info.stdout) \(info.stderr)")

        #expect(throws: VHDXSynthesisError.self) {
            _ = try VHDXView(source: src, options: .init(userMetadata: [VHDXUserMetadataItem(id: id, bytes: [])]))
        }
        #expect(throws: VHDXSynthesisError.self) {
            _ = try VHDXView(source: src, options: .init(userMetadata: [VHDXUserMetadataItem(id: id, bytes: [2]), VHDXUserMetadataItem(id: id, bytes: [1])]))
        }
        #expect(throws: VHDXSynthesisError.self) {
            _ = try VHDXView(source: src, options: .init(userMetadata: [VHDXUserMetadataItem(id: VHDX.virtualDiskSizeItem, bytes: [1])]))
        }
        #expect(throws: VHDXSynthesisError.self) {
            _ = try VHDXView(source: src, options: .init(userMetadata: [VHDXUserMetadataItem(id: id, bytes: [UInt8](repeating: 1, count: 0xF0000))]))
        }
    }

    @Test func invalidInputsAreRejectedWithClearErrors() throws {
        func attempt(_ size: UInt64, _ o: VHDXSynthesisOptions) -> VHDXSynthesisError? {
            do { _ = try VHDXView(source: ZeroSource(size: size), options: o); return nil } catch { return error as? VHDXSynthesisError }
        }
        #expect(attempt(0, .init()) == .emptyDisk)
        #expect(attempt(MiB + 1, .init()) == .virtualSizeNotSectorMultiple(size: MiB + 1, sectorSize: 512))
        #expect(attempt(MiB + 512, .init(logicalSectorSize: 4096)) == .virtualSizeNotSectorMultiple(size: MiB + 512, sectorSize: 4096))
        #expect(attempt(MiB, .init(blockSize: 3 << 20)) == .invalidBlockSize(3 << 20))
        #expect(attempt(MiB, .init(blockSize: 512 << 20)) == .invalidBlockSize(512 << 20))
        #expect(attempt(MiB, .init(blockSize: 1 << 19)) == .invalidBlockSize(1 << 19))
        #expect(attempt(MiB, .init(logicalSectorSize: 4096, physicalSectorSize: 512)) == .invalidSectorSize(logical: 4096, physical: 512))
        #expect(attempt(MiB, .init(logicalSectorSize: 1024)) == .invalidSectorSize(logical: 1024, physical: 4096))
        #expect(attempt(MiB, .init(seed: [1, 2, 3])) == .invalidSeed(count: 3))
        #expect(attempt(MiB, .init(creator: String(repeating: "x", count: 257))) == .creatorTooLong(codeUnits: 257))
        #expect(attempt(VHDX.maxVirtualSize + 512, .init()) == .virtualSizeTooLarge(VHDX.maxVirtualSize + 512))
        #expect(VHDXSynthesisError.virtualSizeNotSectorMultiple(size: 5, sectorSize: 512).description.contains("not a multiple"))
        // Default block size follows qemu-img.
        #expect(try VHDXView(source: ZeroSource(size: MiB)).blockSize == 8 << 20)
        #expect(try VHDXView(source: ZeroSource(size: 2 << 30)).blockSize == 16 << 20)
    }
}

@Suite("VHDX synthesizer determinism and extents")
struct VHDXSynthDeterminismTests {
    @Test func stream_equals_file_and_is_deterministic() throws {
        let dir = Scratch("det")
        let src = dir.file("src.raw")
        let size = 37 * MiB + 3 * 512
        try makeSourceFile(src, size: size, blockSize: 2 * MiB, chunkRatio: 2048, pattern: .sparseRandom, seed: 42)
        let source = try RawFile(path: src)
        let opts = VHDXSynthesisOptions(blockSize: 2 << 20, seed: Array(0..<16))
        let a = try VHDXView(source: source, options: opts)
        let b = try VHDXView(source: source, options: opts)
        try SparseImageWriter.write(a, toPath: dir.file("a.vhdx"), options: .init(chunkSize: 1 << 20, threads: 2, deferredPrefix: 8, sync: false))
        try SparseImageWriter.write(b, toPath: dir.file("b.vhdx"), options: .init(chunkSize: 3 << 20, threads: 1, sync: false))
        let fa = try RawFile(path: dir.file("a.vhdx")), fb = try RawFile(path: dir.file("b.vhdx"))
        #expect(fa.size == fb.size)
        #expect(try SHA256.hash(fa) == SHA256.hash(fb))
        #expect(a.layoutDump() == b.layoutDump())

        // Odd-sized reads at odd offsets over the whole stream equal the file.
        var rng = SynthRandom(seed: 5)
        var off: UInt64 = 0
        while off < a.size {
            let n = Int(min(a.size - off, 1 + rng.next(below: 3 * MiB)))
            #expect(try a.read(at: off, count: n) == fa.read(at: off, count: n), "at \(off)+\(n)")
            off += UInt64(n)
        }
        // Odd sizes at random places, including tiny reads across structure boundaries.
        for _ in 0..<200 {
            let n = Int([1, 7, 511, 513, 4095, 4097, 65537][Int(rng.next(below: 7))])
            let o = rng.next(below: a.size - UInt64(n))
            #expect(try a.read(at: o, count: n) == fa.read(at: o, count: n), "at \(o)+\(n)")
        }
        for o in [a.payloadStart - 3, a.batOffset - 1, a.metadataOffset - 2, 0x4FFFF, a.size - 1] {
            #expect(try a.read(at: o, count: Int(min(9, a.size - o))) == fa.read(at: o, count: Int(min(9, a.size - o))))
        }
        #expect(throws: BlockSourceError.self) { _ = try a.read(at: a.size - 1, count: 2) }

        // Another seed changes the GUIDs (and so the headers), nothing else.
        let c = try VHDXView(source: source, options: .init(blockSize: 2 << 20, seed: Array(1...16)))
        #expect(c.virtualDiskID != a.virtualDiskID && c.fileWriteGuid != a.fileWriteGuid)
        #expect(c.size == a.size)
        #expect(try c.read(at: a.batOffset, count: Int(a.size - a.batOffset)) == a.read(at: a.batOffset, count: Int(a.size - a.batOffset)))
    }

    /// The view's extent map is exact: extents tile the file, non-data extents read as zeros,
    /// and the file written from data extents only equals the stream.
    @Test func extentMapIsExact() throws {
        let v = 20 * MiB + 512
        let data: [Range<UInt64>] = [100..<5000, 3 * MiB - 10..<3 * MiB + 10, 20 * MiB..<20 * MiB + 512]
        let view = try VHDXView(source: PatternSource(size: v, dataRanges: data), options: .init(blockSize: 1 << 20))
        let ext = try view.allExtents()
        #expect(ext.first?.offset == 0 && ext.last?.end == view.size)
        for (x, y) in zip(ext, ext.dropFirst()) { #expect(x.end == y.offset && x.kind != y.kind) }
        for e in ext where e.kind != .data {
            #expect(try view.read(at: e.offset, count: Int(e.length)).allSatisfy { $0 == 0 }, "\(e)")
        }
        let dataBytes = ext.filter { $0.kind == .data }.reduce(0) { $0 + $1.length }
        let skeletonData = UInt64(0x50000) + 0x11000 + view.geometry.totalEntries * 8
        #expect(dataBytes == skeletonData + (4900 + 20 + 512))
        // A sub-range query agrees with the full map.
        let sub = try view.extents(in: view.payloadStart + 100..<view.payloadStart + 3 * MiB)
        #expect(sub.first?.offset == view.payloadStart + 100 && sub.last?.end == view.payloadStart + 3 * MiB)
    }
}

@Suite("Raw inputs: detection, padding, sparse output")
struct VHDXSynthRawTests {
    @Test func detectsFormatByContent() throws {
        #expect(detectFormat(firstBytes: Array("vhdxfile".utf8) + [0, 0]) == .vhdx)
        #expect(detectFormat(firstBytes: Array("vhdxfil".utf8)) == .raw)
        #expect(detectFormat(firstBytes: []) == .raw)
        let dir = Scratch("detect")
        // A VHDX named .raw is still VHDX; a raw disk named .vhdx is raw.
        let view = try VHDXView(source: ZeroSource(size: MiB))
        try SparseImageWriter.write(view, toPath: dir.file("disk.raw"), options: .init(sync: false))
        #expect(try detectFormat(path: dir.file("disk.raw")) == .vhdx)
        // Opened through the VHDX reader: the virtual disk, not the file.
        let opened = try openDiskImage(path: dir.file("disk.raw"))
        #expect(opened.size == MiB)
        #expect(try opened.read(at: 0, count: 4096).allSatisfy { $0 == 0 })
        _ = try RawFile.create(path: dir.file("disk.vhdx"), size: 4096)
        #expect(try detectFormat(path: dir.file("disk.vhdx")) == .raw)
        #expect(try openDiskImage(path: dir.file("disk.vhdx")).size == 4096)
        #expect(try openDiskImage(path: dir.file("disk.raw"), format: .raw).size == view.size)
    }

    @Test func paddingReadsZerosAndStaysAbsent() throws {
        let base = MemorySource([1, 2, 3, 4, 5])
        let p = PaddedSource.roundedUp(base, to: 512)
        #expect(p.size == 512)
        let bytes = try p.read(at: 3, count: 6)
        #expect(bytes == [4, 5, 0, 0, 0, 0])
        #expect(try p.allExtents() == [Extent(offset: 0, length: 5, kind: .data), Extent(offset: 5, length: 507, kind: .absent)])
        #expect(PaddedSource.roundedUp(MemorySource([UInt8](repeating: 1, count: 512)), to: 512).size == 512)
        // A VHDX of a padded odd-sized raw: the padding allocates nothing beyond the data's block.
        let view = try VHDXView(source: p, options: .init(blockSize: 1 << 20))
        #expect(view.allocatedBlockCount == 1)
    }

    @Test func rawOutputIsSparseAndExact() throws {
        let dir = Scratch("rawout")
        let src = dir.file("src.raw")
        let f = try RawFile.create(path: src, size: 64 * MiB)
        var rng = SynthRandom(seed: 1)
        try f.write(at: 5 * MiB + 3, rng.bytes(100_000))
        try f.write(at: 40 * MiB, [UInt8](repeating: 0, count: 16 * Int(MiB)))   // allocated zeros
        try f.write(at: 63 * MiB, [9])
        let stats = try SparseImageWriter.write(try RawFile(path: src), toPath: dir.file("out.raw"),
                                                options: .init(chunkSize: 4 << 20, skipZeroChunks: true, sync: false))
        let out = try RawFile(path: dir.file("out.raw"))
        #expect(out.size == 64 * MiB)
        #expect(try SHA256.hash(out) == SHA256.hash(f))
        #expect(stats.dataBytes >= 16 * MiB)
        #expect(stats.writtenBytes <= 3 * 4 * MiB)   // the zero chunks were not written
        let outData = try out.allExtents().filter { $0.kind == .data }.reduce(0) { $0 + $1.length }
        #expect(outData <= 3 * 4 * MiB)
    }
}

@Suite("VHDX synthesizer layout golden file")
struct VHDXSynthGoldenTests {
    @Test func layoutDumpMatchesGolden() throws {
        let src = PatternSource(size: 20 * MiB + 512, dataRanges: [0..<512, 2 * MiB - 1..<2 * MiB + 1, 20 * MiB..<20 * MiB + 512])
        let item = VHDXUserMetadataItem(id: GUID.derived(seed: Array("golden".utf8), label: "item"), bytes: Array("pointer".utf8))
        let view = try VHDXView(source: src, options: .init(blockSize: 1 << 20, seed: Array(repeating: 0x5A, count: 16),
                                                           creator: "BootLab golden", userMetadata: [item]))
        let dump = view.layoutDump()
        let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Golden/vhdx-synth/layout-20MiB-1M.txt").path
        if ProcessInfo.processInfo.environment["BOOTLAB_UPDATE_GOLDEN"] == "1" {
            // Recording is not testing: comparing with what was just written could never fail,
            // so a recording run fails on purpose and the comparison is the next run's.
            let old = try? String(contentsOfFile: golden, encoding: .utf8)
            try FileManager.default.createDirectory(atPath: (golden as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try dump.write(toFile: golden, atomically: true, encoding: .utf8)
            Issue.record("golden \(golden) recorded (\(old == dump ? "unchanged" : "changed")); run again without BOOTLAB_UPDATE_GOLDEN to compare")
            return
        }
        let expected = try String(contentsOfFile: golden, encoding: .utf8)
        #expect(dump == expected)
        #expect(dump.contains("checksum 0xc66b8cae"))
    }
}
