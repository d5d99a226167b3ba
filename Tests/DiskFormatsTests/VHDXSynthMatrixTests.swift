import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// One conversion of the matrix: a sparse raw source, synthesized to VHDX, cross-checked with
/// tools we did not write (qemu-img for 512-byte sectors — QEMU refuses 4096 — and libvhdi).
struct SynthCase: Sendable, CustomTestStringConvertible {
    var name: String
    var virtualSize: UInt64
    var blockSize: UInt32
    var sectorSize: UInt32
    var pattern: SynthPattern
    var testDescription: String { "\(name): \(virtualSize) B, block \(blockSize >> 20) MiB, sector \(sectorSize), \(pattern)" }
}

private let MiB: UInt64 = 1 << 20
private let GiB: UInt64 = 1 << 30

/// A subset of sizes × block sizes × sector sizes × data that covers every dimension and the
/// combinations that matter: partial last blocks with 1/2/32/256 MiB blocks, both sector sizes
/// with empty, dense and sparse data, and BATs spanning several chunks for both sector sizes.
let synthMatrix: [SynthCase] = [
    SynthCase(name: "one sector", virtualSize: 512, blockSize: 1 << 20, sectorSize: 512, pattern: .denseRandom),
    SynthCase(name: "one 4K sector", virtualSize: 4096, blockSize: 2 << 20, sectorSize: 4096, pattern: .denseRandom),
    SynthCase(name: "1 MiB + 512", virtualSize: MiB + 512, blockSize: 2 << 20, sectorSize: 512, pattern: .denseRandom),
    SynthCase(name: "1 MiB + 512, 1M blocks", virtualSize: MiB + 512, blockSize: 1 << 20, sectorSize: 512, pattern: .blockBoundaries),
    SynthCase(name: "1 MiB + 4096, 4K", virtualSize: MiB + 4096, blockSize: 1 << 20, sectorSize: 4096, pattern: .denseRandom),
    SynthCase(name: "odd, every boundary", virtualSize: 9 * MiB + 1536, blockSize: 2 << 20, sectorSize: 512, pattern: .blockBoundaries),
    SynthCase(name: "odd, every boundary, 4K", virtualSize: 9 * MiB + 12288, blockSize: 1 << 20, sectorSize: 4096, pattern: .blockBoundaries),
    SynthCase(name: "empty", virtualSize: 64 * MiB, blockSize: 8 << 20, sectorSize: 512, pattern: .empty),
    SynthCase(name: "empty, 4K", virtualSize: 48 * MiB, blockSize: 32 << 20, sectorSize: 4096, pattern: .empty),
    SynthCase(name: "dense, 4K", virtualSize: 7 * MiB, blockSize: 2 << 20, sectorSize: 4096, pattern: .denseRandom),
    SynthCase(name: "32M blocks, sparse", virtualSize: 100 * MiB + 512, blockSize: 32 << 20, sectorSize: 512, pattern: .sparseRandom),
    SynthCase(name: "256M blocks, boundaries", virtualSize: 600 * MiB + 512, blockSize: 256 << 20, sectorSize: 512, pattern: .blockBoundaries),
    SynthCase(name: "256M blocks, sparse, 4K", virtualSize: 300 * MiB, blockSize: 256 << 20, sectorSize: 4096, pattern: .sparseRandom),
    // CR = 4096 at 1 MiB / 512 B: the BAT interleaves a sector-bitmap entry after block 4095.
    SynthCase(name: "BAT over 2 chunks", virtualSize: 4 * GiB + 3 * MiB + 512, blockSize: 1 << 20, sectorSize: 512, pattern: .chunkBoundaries),
    // 4 KiB sectors: a chunk is always 32 GiB of virtual disk (CR × B = 2^23 × 4096).
    SynthCase(name: "BAT over 2 chunks, 4K", virtualSize: 32 * GiB + 16 * MiB, blockSize: 8 << 20, sectorSize: 4096, pattern: .chunkBoundaries),
]

@Suite("VHDX synthesizer × qemu-img × libvhdi", .serialized)
struct VHDXSynthMatrixTests {
    @Test(arguments: synthMatrix)
    func convertAndCrossCheck(_ c: SynthCase) throws {
        let dir = Scratch("matrix")
        let src = dir.file("src.raw"), out = dir.file("out.vhdx")
        let cr = VHDX.chunkRatio(blockSize: c.blockSize, logicalSectorSize: c.sectorSize)
        let written = try makeSourceFile(src, size: c.virtualSize, blockSize: UInt64(c.blockSize), chunkRatio: cr,
                                         pattern: c.pattern, seed: c.virtualSize ^ UInt64(c.blockSize))
        let source = try RawFile(path: src)
        let view = try VHDXView(source: source, options: VHDXSynthesisOptions(
            blockSize: c.blockSize, logicalSectorSize: c.sectorSize, seed: Array(repeating: 7, count: 16)))
        try SparseImageWriter.write(view, toPath: out, options: .init(deferredPrefix: 8, sync: false))

        // Allocation follows the extent map exactly: blocks touched by data, nothing else.
        var expectedBlocks = Set<UInt64>()
        for r in written { for b in (r.lowerBound / UInt64(c.blockSize))...((r.upperBound - 1) / UInt64(c.blockSize)) { expectedBlocks.insert(b) } }
        #expect(view.allocatedBlockCount == UInt64(expectedBlocks.count))
        #expect(Set(view.allocatedBlocks.flatMap { Array($0) }) == expectedBlocks)

        // The file is the stream.
        let file = try RawFile(path: out)
        #expect(file.size == view.size)
        #expect(try SHA256.hash(file) == SHA256.hash(view))

        // Our own VHDX reader returns the source's bytes.
        let back = try VHDXFile.open(path: out)
        #expect(back.size == c.virtualSize)
        if c.virtualSize <= GiB {
            #expect(try sameBytes(back, 0, source, 0, count: c.virtualSize))
        } else {
            for r in written { #expect(try sameBytes(back, r.lowerBound, source, r.lowerBound, count: UInt64(r.count)), "range \(r)") }
            var rng = SynthRandom(seed: 3)
            for _ in 0..<32 {
                let off = rng.next(below: c.virtualSize / 4096) * 4096
                #expect(try sameBytes(back, off, source, off, count: 4096), "probe at \(off)")
            }
        }

        if c.sectorSize == 512 {
            let check = try runTool(["qemu-img", "check", "-f", "vhdx", out])
            #expect(check.status == 0, "qemu-img check: \(check.stdout) \(check.stderr)")
            #expect(check.stdout.contains("No errors were found on the image."))
            let cmp = try runTool(["qemu-img", "compare", "-f", "raw", "-F", "vhdx", src, out])
            #expect(cmp.status == 0, "qemu-img compare: \(cmp.stdout) \(cmp.stderr)")
            #expect(cmp.stdout.contains("Images are identical."))
        }

        let info = try runTool(["vhdiinfo", out])
        #expect(info.status == 0, "vhdiinfo: \(info.stderr)")
        #expect(info.stdout.contains("Disk type\t\t: Dynamic"))
        #expect(info.stdout.contains("(\(c.virtualSize) bytes)"), "vhdiinfo media size: \(info.stdout)")
        #expect(info.stdout.contains("Bytes per sector\t: \(c.sectorSize) bytes"))

        if c.sectorSize == 4096 {
            try compareThroughVhdimount(out, source: source, written: written, dir: dir)
        }
    }

    /// Reads the VHDX through libvhdi's FUSE mount and compares it with the source: in full for
    /// small disks, otherwise every written range plus probes of unwritten blocks.
    private func compareThroughVhdimount(_ vhdx: String, source: RawFile, written: [Range<UInt64>], dir: Scratch) throws {
        let mnt = dir.file("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        let mount = try runDaemonizingTool(["vhdimount", vhdx, mnt], logPath: dir.file("vhdimount.log"))
        try #require(mount.status == 0, "vhdimount failed (FUSE unavailable?): \(mount.stderr)")
        defer { _ = try? runTool(["umount", mnt]) }
        let mounted = try RawFile(path: mnt + "/vhdi1")
        #expect(mounted.size == source.size)
        if source.size <= 512 * MiB {
            #expect(try sameBytes(mounted, 0, source, 0, count: source.size))
        } else {
            for r in written {
                #expect(try sameBytes(mounted, r.lowerBound, source, r.lowerBound, count: UInt64(r.count)), "range \(r)")
            }
            var rng = SynthRandom(seed: 99)
            for _ in 0..<16 {
                let off = rng.next(below: source.size / 4096) * 4096
                #expect(try sameBytes(mounted, off, source, off, count: 4096), "probe at \(off)")
            }
        }
    }
}
