import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

private let MiB: UInt64 = 1 << 20

/// One synthesized VHD case: subformat, virtual size and what the source holds.
struct VHDCase: CustomStringConvertible, Sendable {
    let subformat: VHDSubformat
    let size: UInt64
    let pattern: SynthPattern
    var description: String { "\(subformat.rawValue)-\(size)-\(pattern)" }
}

/// Writes a VHD view of `src` to `out`, the way `convert -O vhd` does (signature last).
@discardableResult
func writeVHD(_ src: any BlockSource, _ out: String, _ o: VHDSynthesisOptions = .init(), chunk: Int = 8 << 20, threads: Int = 2) throws -> VHDView {
    let v = try VHDView(source: src, options: o)
    try SparseImageWriter.write(v, toPath: out, options: .init(chunkSize: chunk, threads: threads, deferredPrefix: 8, sync: false))
    return v
}

/// qemu-img's JSON info as a dictionary.
func qemuInfo(_ path: String, format: String? = nil) throws -> [String: Any] {
    var args = ["qemu-img", "info", "--output=json"]
    if let format { args += ["-f", format] }
    let r = try runTool(args + [path])
    guard r.status == 0, let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
        throw ToolFailed(description: "qemu-img info \(path): \(r.stdout) \(r.stderr)")
    }
    return obj
}

@Suite("VHD view × qemu-img × libvhdi", .serialized)
struct VHDViewToolTests {
    static let cases: [VHDCase] = [
        VHDCase(subformat: .dynamic, size: 512, pattern: .blockBoundaries),
        VHDCase(subformat: .dynamic, size: MiB + 512, pattern: .blockBoundaries),
        VHDCase(subformat: .dynamic, size: 2 * MiB + 512, pattern: .blockBoundaries),   // just past a block boundary
        VHDCase(subformat: .dynamic, size: 37 * MiB + 1536, pattern: .sparseRandom),
        VHDCase(subformat: .dynamic, size: 9 * MiB, pattern: .empty),
        VHDCase(subformat: .fixed, size: MiB, pattern: .blockBoundaries),
        VHDCase(subformat: .fixed, size: 11 * MiB, pattern: .sparseRandom),
    ]

    @Test(arguments: cases)
    func viewReadByQemuAndLibvhdi(_ c: VHDCase) throws {
        let d = Scratch("vhd-tools")
        let src = d.file("src.raw"), out = d.file("out.vhd")
        try makeSourceFile(src, size: c.size, blockSize: 2 * MiB, chunkRatio: 1, pattern: c.pattern, seed: c.size)
        let raw = try RawFile(path: src)
        let view = try writeVHD(raw, out, .init(subformat: c.subformat, seed: Array(1...16)))
        let file = try RawFile(path: out)
        #expect(file.size == view.size)
        #expect(try SHA256.hash(file) == SHA256.hash(view), "the file is the view's stream")

        // qemu-img: detected as vpc (a fixed VHD only with -f vpc: QEMU probes "conectix" at 0),
        // the exact virtual size, identical content.
        if c.subformat == .dynamic {
            let info = try qemuInfo(out)
            #expect(info["format"] as? String == "vpc")
            #expect((info["virtual-size"] as? NSNumber)?.uint64Value == c.size)
        } else {
            #expect(try qemuInfo(out)["format"] as? String == "raw")
            let info = try qemuInfo(out, format: "vpc")
            #expect((info["virtual-size"] as? NSNumber)?.uint64Value == c.size)
        }
        let cmp = try runTool(["qemu-img", "compare", "-f", "raw", "-F", "vpc", src, out])
        #expect(cmp.status == 0, "qemu-img compare: \(cmp.stdout) \(cmp.stderr)")
        // qemu-img check has no vpc checker at all: exit 63, "does not support checks".
        let check = try runTool(["qemu-img", "check", "-f", "vpc", out])
        #expect(check.status == 63 && check.stderr.contains("does not support checks"), "\(check.stderr)")
        let report = try VHDCheck.run(path: out)
        #expect(report.findings.isEmpty, "\(report.findings)")

        // libvhdi: vhdiinfo reports type and size; vhdimount's bytes equal the source.
        let vi = try runTool(["vhdiinfo", out])
        #expect(vi.status == 0, "\(vi.stdout) \(vi.stderr)")
        #expect(vi.stdout.contains("(\(c.size) bytes)"), "\(vi.stdout)")
        #expect(vi.stdout.contains(c.subformat == .dynamic ? "Dynamic" : "Fixed"), "\(vi.stdout)")
        #expect(try readWithVhdimount(out, in: d) == fileBytes(src))

        // Our reader agrees, and the extents keep the holes.
        let f = try VHDFile.open(path: out)
        #expect(f.size == c.size && f.diskType == (c.subformat == .dynamic ? .dynamic : .fixed))
        #expect(try readAll(f) == fileBytes(src))

        // Deterministic: another run with other chunking gives the same bytes.
        let out2 = d.file("out2.vhd")
        try writeVHD(try RawFile(path: src), out2, .init(subformat: c.subformat, seed: Array(1...16)), chunk: 1 << 20, threads: 1)
        #expect(try sha(out) == sha(out2))
    }

    /// A dynamic VHD carrying a plugin pointer is still a valid VHD for QEMU and libvhdi, and so
    /// is a sparse disk past the CHS range (current size, not geometry).
    @Test func pointerAndLargeDisksReadByTools() throws {
        let d = Scratch("vhd-ptr")
        let src = d.file("src.raw"), out = d.file("p.vhd")
        try makeSourceFile(src, size: 5 * MiB, blockSize: 2 * MiB, chunkRatio: 1, pattern: .blockBoundaries, seed: 5)
        let ptr = [UInt8](repeating: 0xAB, count: 70_000)
        try writeVHD(try RawFile(path: src), out, .init(pointer: ptr))
        #expect(try runTool(["qemu-img", "compare", "-f", "raw", "-F", "vpc", src, out]).status == 0)
        #expect(try runTool(["vhdiinfo", out]).status == 0)
        #expect(try readWithVhdimount(out, in: d) == fileBytes(src))
        #expect(try VHDCheck.run(path: out).findings.isEmpty)
        #expect(try RawFile(path: out).read(at: VHDLayout.pointerAreaOffset + 16, count: ptr.count) == ptr)
        #expect(try VHDDriver().readPluginPointer(path: out) == ptr)

        for (sf, size) in [(VHDSubformat.dynamic, UInt64(300) << 30), (.fixed, UInt64(200) << 30)] {
            let big = d.file("big-\(sf.rawValue).vhd")
            let bigSrc = PatternSource(size: size, dataRanges: [0..<512, size - 4096..<size])
            let v = try writeVHD(bigSrc, big, .init(subformat: sf))
            #expect(v.footer.geometry == VHDGeometry(cylinders: 65535, heads: 16, sectorsPerTrack: 255))
            let info = try qemuInfo(big, format: "vpc")
            #expect((info["virtual-size"] as? NSNumber)?.uint64Value == size, "\(sf)")
            let vi = try runTool(["vhdiinfo", big])
            #expect(vi.stdout.contains("(\(size) bytes)"), "\(vi.stdout)")
            let f = try VHDFile.open(path: big)
            #expect(try f.read(at: size - 4096, count: 4096) == bigSrc.read(at: size - 4096, count: 4096))
            let io = try runTool(["qemu-io", "-f", "vpc", "-c", "read -P 0 4096 4096", "-c", "read -v \(size - 512) 16", big])
            #expect(io.status == 0 && !io.stdout.contains("Pattern verification failed"), "\(io.stdout)")
            #expect(!(try VHDCheck.run(path: big)).isCorrupt)
        }
    }

    /// Block sizes other than 2 MiB (a 128-byte bitmap in one sector; a 4 KiB bitmap filling the
    /// whole pad): QEMU and libvhdi read the same bytes. (64 MiB blocks over a 130 MiB disk passed
    /// too, once, in 2.5 minutes: too slow for the suite.)
    @Test(arguments: [UInt32(512 << 10), 16 << 20])
    func otherBlockSizes(_ bs: UInt32) throws {
        let d = Scratch("vhd-bs")
        let src = d.file("src.raw"), out = d.file("b.vhd")
        try makeSourceFile(src, size: 3 * UInt64(bs) + 512, blockSize: UInt64(bs), chunkRatio: 1, pattern: .blockBoundaries, seed: UInt64(bs))
        let v = try writeVHD(try RawFile(path: src), out, .init(blockSize: bs))
        #expect(v.layout.slotPad == max(4096, UInt64(bs) / 4096))
        #expect(try runTool(["qemu-img", "compare", "-f", "raw", "-F", "vpc", src, out]).status == 0)
        #expect(try readWithVhdimount(out, in: d) == fileBytes(src))
        #expect(try readAll(try VHDFile.open(path: out)) == fileBytes(src))
        #expect(try VHDCheck.run(path: out).findings.isEmpty)
    }

    /// qemu-img's own vpc outputs (dynamic and fixed, with and without force_size) are read by
    /// our reader exactly as qemu-img converts them back to raw.
    @Test(arguments: ["subformat=dynamic", "subformat=fixed", "subformat=dynamic,force_size=on", "subformat=fixed,force_size=on"])
    func readsQemuOutputs(_ opts: String) throws {
        let d = Scratch("vhd-qemu")
        let src = d.file("src.raw"), vhd = d.file("q.vhd"), back = d.file("back.raw")
        let size = 13 * MiB + 4096
        try makeSourceFile(src, size: size, blockSize: 2 * MiB, chunkRatio: 1, pattern: .sparseRandom, seed: 77)
        try run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", opts, src, vhd)
        try run("qemu-img", "convert", "-f", "vpc", "-O", "raw", vhd, back)
        let f = try VHDFile.open(path: vhd)
        let theirs = try fileBytes(back)
        #expect(f.size == UInt64(theirs.count))
        #expect(try readAll(f) == theirs)
        #expect(Array(theirs.prefix(Int(size))) == (try fileBytes(src)))
        let report = try VHDCheck.run(path: vhd)
        #expect(!report.isCorrupt, "\(report.findings)")
        #expect(try DiskFormatRegistry.detect(path: vhd)?.name == "vhd")
        // force_size writes creator "qem2" and the exact size; without it the size is the CHS one.
        if opts.contains("force_size") { #expect(f.size == size && VHD.fourCC(f.footer.creatorApp) == "qem2") }
        else { #expect(f.size == f.footer.geometry.sectors * 512) }
    }
}

@Suite("VHD view structures")
struct VHDViewStructureTests {
    @Test func dynamicSkeletonFollowsTheLayout() throws {
        let v: UInt64 = 9 * MiB + 512
        let src = PatternSource(size: v, dataRanges: [100..<600, 4 * MiB + 3..<4 * MiB + 9, v - 512..<v])
        let view = try VHDView(source: src, options: .init(seed: Array(repeating: 7, count: 16)))
        #expect(view.layout.blockCount == 5 && view.layout.batLength == 512)
        #expect(view.payloadStart == 0x21000)
        let sk = try view.skeleton()
        #expect(UInt64(sk.count) == view.payloadStart)
        let f = try VHDFooter.parse(Array(sk[0..<512]), at: 0)
        #expect(f.checksumIsValid && f.currentSize == v && f.originalSize == v && f.diskType == .dynamic)
        #expect(f.dataOffset == 0x200 && f.timestamp == 0 && VHD.fourCC(f.creatorApp) == "win ")
        #expect(f.geometry == VHDGeometry.forSize(v))
        let h = try VHDDynamicHeader.parse(Array(sk[0x200..<0x600]), at: 0x200)
        #expect(h.checksumIsValid && h.tableOffset == 0x20000 && h.maxTableEntries == 5 && h.blockSize == 2 << 20)
        #expect(h.dataOffset == .max)
        // BAT: blocks 0, 2, 4 allocated in order; padding entries 0xFFFFFFFF.
        let slot = UInt64(0x1000 + (2 << 20))
        let entries = (0..<128).map { VHD.be32(sk, 0x20000 + 4 * $0) }
        #expect(entries[0] == UInt32((0x21000 + 0xE00) / 512))
        #expect(entries[1] == VHD.unallocated && entries[3] == VHD.unallocated)
        #expect(entries[2] == UInt32((0x21000 + slot + 0xE00) / 512))
        #expect(entries[4] == UInt32((0x21000 + 2 * slot + 0xE00) / 512))
        #expect(entries[5...].allSatisfy { $0 == VHD.unallocated })
        // The slot: zeros, an all-ones bitmap, data at a 4 KiB boundary.
        let s0 = try view.read(at: 0x21000, count: 0x1000 + 1024)
        #expect(s0[0..<0xE00].allSatisfy { $0 == 0 } && s0[0xE00..<0x1000].allSatisfy { $0 == 0xFF })
        #expect(Array(s0[0x1000 + 100..<0x1000 + 600]) == (try src.read(at: 100, count: 500)))
        #expect(view.fileOffset(ofVirtual: 4 * MiB + 5) == 0x21000 + slot + 0x1000 + 5)
        #expect(view.fileOffset(ofVirtual: 2 * MiB) == nil)
        // The last block: one sector of data, padding to a whole block, then the footer.
        #expect(view.size == 0x21000 + 3 * slot + 512)
        #expect(try view.read(at: view.size - 512, count: 512) == Array(sk[0..<512]))
        let last = try view.read(at: view.layout.dataOffset(rank: 2), count: Int(2 * MiB))
        #expect(Array(last[Int(MiB)..<Int(MiB) + 512]) == (try src.read(at: v - 512, count: 512)))
        #expect(last[(Int(MiB) + 512)...].allSatisfy { $0 == 0 })
    }

    /// The extent map tiles the file, non-data reads as zeros, and data is exactly the structures
    /// plus the source's data.
    @Test(arguments: [VHDSubformat.dynamic, .fixed])
    func extentMapIsExact(_ sf: VHDSubformat) throws {
        let v = 20 * MiB
        let data: [Range<UInt64>] = [100..<5000, 3 * MiB - 10..<3 * MiB + 10, v - 512..<v]
        let view = try VHDView(source: PatternSource(size: v, dataRanges: data), options: .init(subformat: sf, pointer: sf == .dynamic ? [1, 2, 3] : []))
        let ext = try view.allExtents()
        #expect(ext.first?.offset == 0 && ext.last?.end == view.size)
        for (x, y) in zip(ext, ext.dropFirst()) { #expect(x.end == y.offset && x.kind != y.kind) }
        for e in ext where e.kind != .data {
            #expect(try view.read(at: e.offset, count: Int(e.length)).allSatisfy { $0 == 0 }, "\(e)")
        }
        let dataBytes = ext.filter { $0.kind == .data }.reduce(0) { $0 + $1.length }
        let payload: UInt64 = 4900 + 20 + 512
        if sf == .dynamic {
            #expect(dataBytes == 512 + 1024 + 16 + 3 + view.layout.batLength + view.allocatedBlockCount * 512 + payload + 512)
        } else {
            #expect(dataBytes == payload + 512)
        }
        // Odd reads across every boundary agree with one full read.
        let all = try view.read(at: 0, count: Int(view.size))
        var rng = SynthRandom(seed: 3)
        for _ in 0..<300 {
            let n = Int([1, 7, 511, 513, 4095, 4097, 65537][Int(rng.next(below: 7))])
            let o = rng.next(below: view.size - UInt64(n))
            #expect(try view.read(at: o, count: n) == Array(all[Int(o)..<Int(o) + n]), "at \(o)+\(n)")
        }
    }

    /// The contract of NativeFormatView: the skeleton ignores data; payload maps unchanged.
    @Test func skeletonIgnoresDataAndPointerKeepsLayout() throws {
        func disk(_ fill: UInt8) -> MemorySource {
            var b = [UInt8](repeating: 0, count: Int(6 * MiB))
            for i in Int(2 * MiB)..<Int(3 * MiB) { b[i] = fill &+ UInt8(truncatingIfNeeded: i) }
            return MemorySource(b, zeroRanges: [0..<2 * MiB, 3 * MiB..<6 * MiB])
        }
        let a = try VHDView(source: disk(1)), b = try VHDView(source: disk(9))
        #expect(try a.skeleton() == b.skeleton())
        #expect(a.allocatedBlockCount == 1 && a.fileOffset(ofVirtual: 2 * MiB + 7) != nil && a.fileOffset(ofVirtual: 0) == nil)
        #expect(try a.read(at: a.fileOffset(ofVirtual: 2 * MiB + 7)!, count: 1) == disk(1).read(at: 2 * MiB + 7, count: 1))
        let ptr = Array("plugin pointer bytes".utf8)
        let p = try VHDView(source: disk(1), options: .init(pointer: ptr))
        #expect(p.payloadStart == a.payloadStart && p.size == a.size)
        let sk = try p.skeleton()
        #expect(Array(sk[0x1000..<0x1008]) == Array("BLPOINTR".utf8) && sk.le32(0x1008) == UInt32(ptr.count))
        #expect(Array(sk[0x1010..<0x1010 + ptr.count]) == ptr)
        #expect(sk[0x1010 + ptr.count..<0x20000].allSatisfy { $0 == 0 })
        #expect(Array(sk[0..<0x1000]) == Array(try a.skeleton()[0..<0x1000]))
        #expect(Array(sk[0x20000...]) == Array(try a.skeleton()[0x20000...]))
        #expect(p.layoutDump().contains("\(ptr.count) bytes, sha256"))
        #expect(VHDView.pointerPlacement == .vhdPointerArea)

        // Fixed: empty skeleton, identity mapping (zero ranges included), footer after the data.
        let f = try VHDView(source: disk(1), options: .init(subformat: .fixed))
        let fsk = try f.skeleton()
        #expect(f.payloadStart == 0 && fsk.isEmpty && f.size == 6 * MiB + 512)
        #expect(f.fileOffset(ofVirtual: 0) == 0 && f.fileOffset(ofVirtual: 2 * MiB + 7) == 2 * MiB + 7 && f.fileOffset(ofVirtual: 6 * MiB) == nil)
        // A fixed disk keeps its pointer beside the file; only the footer's tag names it.
        let fp = try VHDView(source: disk(1), options: .init(subformat: .fixed, pointer: ptr))
        #expect(fp.sidecarPointer == ptr && fp.size == f.size && fp.payloadStart == 0)
        #expect(VHDSidecarTag.digest(in: Array(try fp.trailer()[85...])) == SHA256.hash(ptr))
        let big = [UInt8](repeating: 1, count: VHDLayout.pointerAreaLength - 15)
        #expect(throws: VHDSynthesisError.pointerTooLarge(count: big.count, capacity: VHDLayout.pointerAreaLength - 16)) {
            _ = try VHDView(source: disk(1), options: .init(pointer: big))
        }
    }

    @Test func invalidInputsAreRejectedWithClearErrors() throws {
        func attempt(_ size: UInt64, _ o: VHDSynthesisOptions) -> VHDSynthesisError? {
            do { _ = try VHDView(source: ZeroSource(size: size), options: o); return nil } catch { return error as? VHDSynthesisError }
        }
        #expect(attempt(0, .init()) == .emptyDisk)
        #expect(attempt(MiB + 1, .init()) == .virtualSizeNotSectorMultiple(size: MiB + 1))
        let e = attempt(MiB + 512, .init(subformat: .fixed))
        #expect(e == .fixedSizeNotMiBMultiple(size: MiB + 512, next: 2 * MiB))
        #expect(e?.description.contains("1049088") == true && e?.description.contains("2097152") == true)
        #expect(attempt(512, .init(subformat: .fixed)) == .fixedSizeNotMiBMultiple(size: 512, next: MiB))
        #expect(attempt(MiB, .init(blockSize: 3 << 20)) == .invalidBlockSize(3 << 20))
        #expect(attempt(VHD.maxDynamicSize + 512, .init()) == .virtualSizeTooLarge(size: VHD.maxDynamicSize + 512, max: VHD.maxDynamicSize))
        #expect(attempt(MiB, .init(seed: [1])) == .invalidSeed(count: 1))
        // The driver maps options and refuses unknown keys.
        let drv = VHDDriver()
        #expect(drv.subformats == ["dynamic", "fixed"])
        #expect(try drv.synthesisOptions(NativeFormatOptions(subformat: "fixed")).subformat == .fixed)
        #expect(throws: NativeFormatOptionError.self) { _ = try drv.synthesisOptions(NativeFormatOptions(subformat: "sparse")) }
        #expect(throws: NativeFormatOptionError.self) { _ = try drv.synthesisOptions(NativeFormatOptions(keys: ["adapter_type": "ide"])) }
        // Large sparse disks cost nothing: 2 TiB-ish dynamic, 1 TiB fixed.
        let huge = try VHDView(source: ZeroSource(size: 2000 << 30))
        #expect(huge.layout.blockCount == 1_024_000 && huge.allocatedBlockCount == 0)
        #expect(try huge.read(at: VHDLayout.batOffset, count: 8) == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(try VHDView(source: ZeroSource(size: 1 << 40), options: .init(subformat: .fixed)).size == (1 << 40) + 512)
    }

    /// The spec's CHS algorithm on known sizes (values from the spec's table and from qemu-img).
    @Test func geometry() {
        #expect(VHDGeometry.forSize(10_514_432) == VHDGeometry(cylinders: 302, heads: 4, sectorsPerTrack: 17))
        #expect(VHDGeometry.forSize(512) == VHDGeometry(cylinders: 0, heads: 4, sectorsPerTrack: 17))
        #expect(VHDGeometry.forSize(127 << 30).sectorsPerTrack == 255)
        #expect(VHDGeometry.forSize(3 << 40) == VHDGeometry(cylinders: 65535, heads: 16, sectorsPerTrack: 255))
        // The footer checksum: one's complement of the byte sum, field excluded.
        var b = [UInt8](repeating: 0, count: 512)
        b[0] = 1; b[511] = 2
        #expect(VHD.checksum(b, fieldAt: 64) == ~UInt32(3))
    }

    @Test func layoutDumpIsDeterministic() throws {
        let src = PatternSource(size: 7 * MiB, dataRanges: [0..<512, 5 * MiB..<5 * MiB + 1])
        let a = try VHDView(source: src, options: .init(seed: Array(repeating: 0x5A, count: 16))).layoutDump()
        let b = try VHDView(source: src, options: .init(seed: Array(repeating: 0x5A, count: 16))).layoutDump()
        #expect(a == b)
        #expect(a.contains("blocks 0..<1: BAT") && a.contains("blocks 1..<2: unallocated") && a.contains("allocated blocks: 2 of 4"))
        #expect(a.contains("creator \"win \"") && a.contains("geometry C/H/S"))
        let f = try VHDView(source: src, options: .init(subformat: .fixed)).layoutDump()
        #expect(f.contains("fixed") && f.contains("data @0x0"))
    }

    /// NativeFormatViewContractTests' checks (which cover every registered driver with its
    /// default options) on VHD with 1 MiB blocks, so a block boundary falls at every MiB of the
    /// contract's disk as it does for VDI.
    @Test func nativeFormatViewContract() throws {
        func views(_ s: any BlockSource) throws -> [any NativeFormatView] {
            [try VHDView(source: s, options: .init(blockSize: 1 << 20)), try VDIView(source: s)]
        }
        let a = try views(NativeFormatViewContractTests.disk(fill: 1)), b = try views(NativeFormatViewContractTests.disk(fill: 200))
        for (va, vb) in zip(a, b) {
            let sk = try va.skeleton()
            #expect(UInt64(sk.count) == va.payloadStart)
            #expect(try vb.skeleton() == sk)
        }
        let disk = NativeFormatViewContractTests.disk(fill: 7)
        let bs = MiB
        for view in try views(disk) {
            let name = type(of: view).formatName
            #expect(view.virtualSize == 6 * MiB)
            for offset: UInt64 in [bs, bs + 4095, 4 * bs + 12345, 5 * bs - 1] {
                let at = try #require(view.fileOffset(ofVirtual: offset), "\(name)")
                #expect(at >= view.payloadStart)
                #expect(try view.read(at: at, count: 1) == disk.read(at: offset, count: 1), "\(name)")
            }
            for offset: UInt64 in [0, 2 * bs + 7, 3 * bs, 5 * bs, 6 * MiB, 6 * MiB + 1] {
                #expect(view.fileOffset(ofVirtual: offset) == nil, "\(name): \(offset)")
            }
        }
    }
}
