import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

private let MiB: UInt64 = 1 << 20

/// Writes a VDI view of `src` to `out`, the way `convert -O vdi` does (header sector last).
@discardableResult
func writeVDI(_ src: any BlockSource, _ out: String, _ o: VDISynthesisOptions = .init(), chunk: Int = 8 << 20, threads: Int = 2) throws -> VDIView {
    let v = try VDIView(source: src, options: o)
    try SparseImageWriter.write(v, toPath: out, options: .init(chunkSize: chunk, threads: threads, deferredPrefix: 512, sync: false))
    return v
}

struct VDICase: CustomStringConvertible, Sendable {
    let size: UInt64
    let pattern: SynthPattern
    var description: String { "\(size)-\(pattern)" }
}

/// QEMU is the only independent VDI reader Debian ships (no VirtualBox, no libvdi): every file
/// is checked by qemu-img info/compare/check and by our own reader.
@Suite("VDI view × qemu-img", .serialized)
struct VDIViewToolTests {
    static let cases: [VDICase] = [
        VDICase(size: 512, pattern: .blockBoundaries),
        VDICase(size: MiB + 512, pattern: .blockBoundaries),   // just past a block boundary
        VDICase(size: 3 * MiB + 512, pattern: .blockBoundaries),
        VDICase(size: 37 * MiB + 1536, pattern: .sparseRandom),
        VDICase(size: 9 * MiB, pattern: .empty),
    ]

    @Test(arguments: cases)
    func viewReadByQemu(_ c: VDICase) throws {
        let d = Scratch("vdi-tools")
        let src = d.file("src.raw"), out = d.file("out.vdi")
        try makeSourceFile(src, size: c.size, blockSize: MiB, chunkRatio: 1, pattern: c.pattern, seed: c.size)
        let view = try writeVDI(try RawFile(path: src), out, .init(seed: Array(1...16)))
        let file = try RawFile(path: out)
        #expect(file.size == view.size)
        #expect(try SHA256.hash(file) == SHA256.hash(view))

        let info = try qemuInfo(out)
        #expect(info["format"] as? String == "vdi")
        #expect((info["virtual-size"] as? NSNumber)?.uint64Value == c.size)
        let cmp = try runTool(["qemu-img", "compare", "-f", "raw", "-F", "vdi", src, out])
        #expect(cmp.status == 0, "qemu-img compare: \(cmp.stdout) \(cmp.stderr)")
        let check = try runTool(["qemu-img", "check", "-f", "vdi", out])
        #expect(check.status == 0 && check.stdout.contains("No errors"), "\(check.stdout) \(check.stderr)")
        let report = try VDICheck.run(path: out)
        #expect(report.findings.isEmpty, "\(report.findings)")
        // qemu-img map agrees on which ranges are data (allocated blocks) and which are not.
        let f = try VDIFile.open(path: out)
        #expect(f.size == c.size)
        #expect(try readAll(f) == fileBytes(src))
        #expect(f.header.blocksAllocated == UInt32(view.allocatedBlockCount))

        let out2 = d.file("out2.vdi")
        try writeVDI(try RawFile(path: src), out2, .init(seed: Array(1...16)), chunk: 1 << 20, threads: 1)
        #expect(try sha(out) == sha(out2))
    }

    /// A pointer and a large sparse disk (more than 262 144 blocks: data moves past 2 MiB).
    @Test func pointerAndLargeDisk() throws {
        let d = Scratch("vdi-ptr")
        let src = d.file("src.raw"), out = d.file("p.vdi")
        try makeSourceFile(src, size: 5 * MiB, blockSize: MiB, chunkRatio: 1, pattern: .blockBoundaries, seed: 6)
        try writeVDI(try RawFile(path: src), out, .init(pointer: [UInt8](repeating: 0xCD, count: 70_000)))
        #expect(try runTool(["qemu-img", "compare", "-f", "raw", "-F", "vdi", src, out]).status == 0)
        #expect(try runTool(["qemu-img", "check", "-f", "vdi", out]).status == 0)
        let size: UInt64 = 300 << 30
        let bigSrc = PatternSource(size: size, dataRanges: [0..<512, size - 4096..<size])
        let big = d.file("big.vdi")
        let v = try writeVDI(bigSrc, big)
        #expect(v.payloadStart == 3 * MiB && v.allocatedBlockCount == 2)
        #expect((try qemuInfo(big)["virtual-size"] as? NSNumber)?.uint64Value == size)
        #expect(try runTool(["qemu-img", "check", "-f", "vdi", big]).status == 0)
        let io = try runTool(["qemu-io", "-f", "vdi", "-c", "read -P 0 4096 4096", "-c", "read -v \(size - 512) 16", big])
        #expect(io.status == 0 && !io.stdout.contains("Pattern verification failed"), "\(io.stdout)")
        #expect(try VDIFile.open(path: big).read(at: size - 4096, count: 4096) == bigSrc.read(at: size - 4096, count: 4096))
        #expect(try VDICheck.run(path: big).findings.isEmpty)
    }

    /// qemu-img's VDI outputs (dynamic and static) read byte for byte as qemu-img reads them.
    @Test(arguments: ["static=off", "static=on"])
    func readsQemuOutputs(_ opts: String) throws {
        let d = Scratch("vdi-qemu")
        let src = d.file("src.raw"), vdi = d.file("q.vdi"), back = d.file("back.raw")
        let size = 13 * MiB + 4096
        try makeSourceFile(src, size: size, blockSize: MiB, chunkRatio: 1, pattern: .sparseRandom, seed: 78)
        try run("qemu-img", "convert", "-f", "raw", "-O", "vdi", "-o", opts, src, vdi)
        try run("qemu-img", "convert", "-f", "vdi", "-O", "raw", vdi, back)
        let f = try VDIFile.open(path: vdi)
        #expect(f.size == size)
        #expect(f.header.imageType == (opts == "static=on" ? .fixed : .normal))
        #expect(try readAll(f) == fileBytes(back))
        #expect(try readAll(f) == fileBytes(src))
        let report = try VDICheck.run(path: vdi)
        #expect(report.findings.isEmpty, "\(report.findings)")
        #expect(try DiskFormatRegistry.detect(path: vdi)?.name == "vdi")
    }
}

@Suite("VDI view structures")
struct VDIViewStructureTests {
    @Test func skeletonFollowsTheLayout() throws {
        let v: UInt64 = 9 * MiB + 512
        let zeros = MemorySource([UInt8](repeating: 0, count: Int(v)), zeroRanges: [0..<v])
        // A source: block 0 data, blocks 1–3 zero extent, block 4 data, the rest absent.
        struct Mixed: BlockSource {
            let size: UInt64
            let z: MemorySource
            func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
                try checkRange(offset, buffer.count)
                for i in 0..<buffer.count { buffer[i] = PatternSource.byte(at: offset + UInt64(i)) & (Mixed.isData(offset + UInt64(i)) ? 0xFF : 0) }
            }
            static func isData(_ o: UInt64) -> Bool { o < 1000 || (4 * MiB..<4 * MiB + 10).contains(o) }
            func extents(in range: Range<UInt64>) throws -> [Extent] {
                let all = [Extent(offset: 0, length: 1000, kind: .data), Extent(offset: 1000, length: 4 * MiB - 1000, kind: .zero),
                           Extent(offset: 4 * MiB, length: 10, kind: .data), Extent(offset: 4 * MiB + 10, length: size - 4 * MiB - 10, kind: .absent)]
                return all.compactMap { e in
                    let a = max(e.offset, range.lowerBound), b = min(e.end, range.upperBound)
                    return a < b ? Extent(offset: a, length: b - a, kind: e.kind) : nil
                }
            }
        }
        _ = zeros
        let src = Mixed(size: v, z: zeros)
        let view = try VDIView(source: src, options: .init(seed: Array(repeating: 9, count: 16)))
        #expect(view.payloadStart == 2 * MiB)
        let sk = try view.skeleton()
        let h = try VDIHeader.parse(Array(sk[0..<512]))
        #expect(h.textString == VDI.preHeaderText && h.headerSize == 0x190 && h.imageType == .normal)
        #expect(h.blockMapOffset == 0x100000 && h.dataOffset == 0x200000 && h.blockSize == 1 << 20)
        #expect(h.diskSize == v && h.blocksInImage == 10 && h.blocksAllocated == 2)
        #expect(h.imageUUID == GUID.derived(seed: Array(repeating: 9, count: 16), label: "vdi-image"))
        #expect(h.linkUUID.isZero && h.parentModificationUUID.isZero && h.legacyGeometry == [0, 0, 0, 512])
        let map = (0..<10).map { sk.le32(0x100000 + 4 * $0) }
        #expect(map == [0, VDI.blockZero, VDI.blockZero, VDI.blockZero, 1, VDI.blockFree, VDI.blockFree, VDI.blockFree, VDI.blockFree, VDI.blockFree])
        #expect(view.size == 4 * MiB)
        #expect(view.fileOffset(ofVirtual: 4 * MiB + 3) == 3 * MiB + 3 && view.fileOffset(ofVirtual: 2 * MiB) == nil)
        #expect(try view.read(at: 3 * MiB, count: 10) == src.read(at: 4 * MiB, count: 10))
        let dump = view.layoutDump()
        #expect(dump.contains("blocks 1..<4: ZERO") && dump.contains("blocks 5..<10: FREE") && dump.contains("allocated blocks: 2 of 10"))
        // Our reader keeps the distinction: ZERO blocks are .zero, FREE ones .absent.
        let f = try VDIFile(source: MemorySource(try view.read(at: 0, count: Int(view.size))))
        let ext = try f.allExtents()
        #expect(ext.contains { $0.kind == .zero && $0.offset == MiB && $0.length == 3 * MiB })
        #expect(ext.contains { $0.kind == .absent && $0.offset == 5 * MiB })
        #expect(try readAll(f) == src.read(at: 0, count: Int(v)))
    }

    @Test func extentMapIsExactAndPointerKeepsLayout() throws {
        let v = 20 * MiB
        let src = PatternSource(size: v, dataRanges: [100..<5000, 3 * MiB - 10..<3 * MiB + 10, v - 512..<v])
        let ptr = Array("pointer".utf8)
        let view = try VDIView(source: src, options: .init(pointer: ptr))
        let plain = try VDIView(source: src)
        #expect(view.size == plain.size && view.payloadStart == plain.payloadStart)
        let ext = try view.allExtents()
        #expect(ext.first?.offset == 0 && ext.last?.end == view.size)
        for (x, y) in zip(ext, ext.dropFirst()) { #expect(x.end == y.offset && x.kind != y.kind) }
        for e in ext where e.kind != .data { #expect(try view.read(at: e.offset, count: Int(e.length)).allSatisfy { $0 == 0 }) }
        let dataBytes = ext.filter { $0.kind == .data }.reduce(0) { $0 + $1.length }
        #expect(dataBytes == 512 + 16 + UInt64(ptr.count) + 20 * 4 + 4900 + 20 + 512)
        let sk = try view.skeleton()
        #expect(Array(sk[0x1010..<0x1010 + ptr.count]) == ptr)
        #expect(VDIView.pointerPlacement == .vdiPointerArea)
        // The skeleton ignores data.
        let other = PatternSource(size: v, dataRanges: [100..<5000, 3 * MiB - 10..<3 * MiB + 10, v - 512..<v])
        #expect(try VDIView(source: other).skeleton() == plain.skeleton())
        let all = try view.read(at: 0, count: Int(view.size))
        var rng = SynthRandom(seed: 4)
        for _ in 0..<200 {
            let n = Int([1, 7, 511, 513, 4095, 4097, 65537][Int(rng.next(below: 7))])
            let o = rng.next(below: view.size - UInt64(n))
            #expect(try view.read(at: o, count: n) == Array(all[Int(o)..<Int(o) + n]), "at \(o)+\(n)")
        }
    }

    @Test func invalidInputsAreRejectedWithClearErrors() throws {
        func attempt(_ size: UInt64, _ o: VDISynthesisOptions = .init()) -> VDISynthesisError? {
            do { _ = try VDIView(source: ZeroSource(size: size), options: o); return nil } catch { return error as? VDISynthesisError }
        }
        #expect(attempt(0) == .emptyDisk)
        #expect(attempt(MiB + 1) == .virtualSizeNotSectorMultiple(size: MiB + 1))
        #expect(attempt(VDILayout.maxVirtualSize + 512) == .virtualSizeTooLarge(size: VDILayout.maxVirtualSize + 512, max: VDILayout.maxVirtualSize))
        #expect(attempt(MiB, .init(seed: [1])) == .invalidSeed(count: 1))
        let drv = VDIDriver()
        #expect(throws: NativeFormatOptionError.self) { _ = try drv.synthesisOptions(NativeFormatOptions(subformat: "static")) }
        #expect(throws: NativeFormatOptionError.self) { _ = try drv.synthesisOptions(NativeFormatOptions(allocationUnit: 2 * MiB)) }
        let huge = try VDIView(source: ZeroSource(size: 2 << 40))
        #expect(huge.layout.blockCount == 2 << 20 && huge.payloadStart == 9 * MiB && huge.size == 9 * MiB)
    }
}

/// `VDIView.blockMapEntry` (public: what callers and layout dumps ask) must agree with the block
/// map the view serves, entry by entry, read back by our reader from a written file. Added after
/// the source mutant `Tests/Mutants/vdi-block-map-off-by-one.patch` survived the whole lab: the
/// served path computes the map itself, so nothing else held this function to it.
@Suite struct VDIBlockMapContractTests {
    @Test func blockMapEntryAgreesWithTheServedMap() throws {
        let d = Scratch("vdi-map")
        let src = d.file("src.raw"), out = d.file("out.vdi")
        try makeSourceFile(src, size: 37 * MiB + 1536, blockSize: MiB, chunkRatio: 1, pattern: .sparseRandom, seed: 7)
        let view = try writeVDI(try RawFile(path: src), out)
        let f = try VDIFile.open(path: out)
        #expect(f.blockMap.count >= 38)
        #expect(f.blockMap.contains(where: VDI.isAllocated) && f.blockMap.contains { !VDI.isAllocated($0) }, "the case needs both kinds of block")
        for (p, served) in f.blockMap.enumerated() {
            #expect(view.blockMapEntry(UInt64(p)) == served, "block \(p): blockMapEntry \(view.blockMapEntry(UInt64(p))) ≠ served \(served)")
        }
    }
}
