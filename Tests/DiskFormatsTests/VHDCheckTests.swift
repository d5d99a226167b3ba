import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

private let MiB: UInt64 = 1 << 20

/// Damaged VHDs: every structure flipped, truncated, pointing past EOF, huge sizes. The reader
/// answers with typed errors (never a crash), `check` names the structure, and QEMU agrees where
/// it looks at all (it verifies only the footer it reads).
@Suite struct VHDCheckTests {
    /// A clean dynamic file of 7 MiB with blocks 0 and 2 allocated, and a clean fixed one.
    func clean(_ d: Scratch, fixed: Bool = false) throws -> (path: String, view: VHDView) {
        let path = d.file(fixed ? "f.vhd" : "c.vhd")
        let src = PatternSource(size: fixed ? 4 * MiB : 7 * MiB, dataRanges: [0..<4096, 4 * MiB..<4 * MiB + 512].filter { $0.upperBound <= (fixed ? 4 * MiB : 7 * MiB) })
        let v = try writeVHD(src, path, .init(subformat: fixed ? .fixed : .dynamic, seed: Array(repeating: 3, count: 16)))
        #expect(try VHDCheck.run(path: path).findings.isEmpty)
        return (path, v)
    }

    func poke(_ path: String, _ at: UInt64, _ bytes: [UInt8]) throws {
        let r = try RawFile(path: path, writable: true)
        try r.write(at: at, bytes)
    }

    func flip(_ path: String, _ at: UInt64) throws {
        let r = try RawFile(path: path, writable: true)
        let b = try r.read(at: at, count: 1)
        try r.write(at: at, [b[0] ^ 0x5A])
    }

    func expectFinding(_ path: String, _ structure: String, _ offset: UInt64?, _ text: String,
                       sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try VHDCheck.run(path: path)
        #expect(r.exitCode == 2, "\(r.findings)", sourceLocation: sourceLocation)
        let hit = r.findings.contains { $0.structure == structure && (offset == nil || $0.offset == offset) && $0.message.contains(text) && $0.severity == .corruption }
        #expect(hit, "\(r.findings)", sourceLocation: sourceLocation)
    }

    /// A flipped checksum byte of the trailing footer: our check and reader catch it (the reader
    /// falls back to the copy at 0, as QEMU, which reads only that copy, does).
    @Test func flippedFooterChecksum() throws {
        let d = Scratch("vhdchk-f")
        let (path, v) = try clean(d)
        try flip(path, v.footerOffset + 66)
        try expectFinding(path, "footer", v.footerOffset + 64, "checksum")
        try expectFinding(path, "footer copy", 0, "differs")
        let f = try VHDFile.open(path: path)
        #expect(f.footerOffset == 0)
        #expect(try f.read(at: 0, count: 4096) == PatternSource(size: 4096, dataRanges: [0..<4096]).read(at: 0, count: 4096))
        #expect(try runTool(["qemu-img", "info", "-f", "vpc", path]).status == 0)
    }

    /// The footer copy at 0 is what QEMU reads: a flipped checksum byte there is refused by QEMU
    /// ("Incorrect header checksum") and reported by our check.
    @Test func flippedFooterCopyChecksum() throws {
        let d = Scratch("vhdchk-fc")
        let (path, _) = try clean(d)
        try flip(path, 65)
        try expectFinding(path, "footer copy", 64, "checksum")
        let q = try runTool(["qemu-img", "info", "-f", "vpc", path])
        #expect(q.status != 0 && q.stderr.contains("checksum"), "\(q.stderr)")
        _ = try VHDFile.open(path: path)  // the trailing footer is intact: still readable
    }

    /// Fixed: the footer is the only structure; QEMU and we both refuse a bad checksum.
    @Test func flippedFixedFooterChecksum() throws {
        let d = Scratch("vhdchk-ff")
        let (path, v) = try clean(d, fixed: true)
        try flip(path, v.footerOffset + 64)
        try expectFinding(path, "footer", v.footerOffset + 64, "checksum")
        #expect(throws: FormatError.self) { _ = try VHDFile.open(path: path) }
        let q = try runTool(["qemu-img", "info", "-f", "vpc", path])
        #expect(q.status != 0, "\(q.stdout)")
    }

    @Test func flippedDynamicHeader() throws {
        let d = Scratch("vhdchk-h")
        let (path, _) = try clean(d)
        try flip(path, 0x200 + 500)  // parent name area: only the checksum notices
        try expectFinding(path, "dynamic disk header", 0x200 + 36, "checksum")
        #expect { _ = try VHDFile.open(path: path) } throws: { ($0 as? FormatError)?.structure == "dynamic disk header" }
        try flip(path, 0x200 + 500)
        try poke(path, 0x200, Array("cxsparsX".utf8))
        #expect { _ = try VHDFile.open(path: path) } throws: { ($0 as? FormatError)?.reason.contains("cxsparse") == true }
        try expectFinding(path, "dynamic disk header", 0x200, "cxsparse")
    }

    /// A BAT entry pointing past the end of the file, one overlapping another block, one over
    /// the BAT itself.
    @Test func batEntries() throws {
        let d = Scratch("vhdchk-bat")
        let (path, v) = try clean(d)
        var e = [UInt8](repeating: 0, count: 4)
        VHD.put32(&e, 0x7000_0000, 0)
        try poke(path, VHDLayout.batOffset + 4, e)  // block 1: far past EOF
        try expectFinding(path, "BAT entry 1", VHDLayout.batOffset + 4, "extends past the footer")
        #expect { _ = try VHDFile.open(path: path) } throws: { ($0 as? FormatError)?.structure == "BAT entry 1" }
        VHD.put32(&e, v.batEntry(0) + 8, 0)
        try poke(path, VHDLayout.batOffset + 4, e)  // block 1 inside block 0
        try expectFinding(path, "BAT entry 1", VHDLayout.batOffset + 4, "overlaps the block of BAT entry 0")
        VHD.put32(&e, UInt32(VHDLayout.batOffset / 512), 0)
        try poke(path, VHDLayout.batOffset + 4, e)
        try expectFinding(path, "BAT entry 1", VHDLayout.batOffset + 4, "overlaps the BAT")
    }

    /// Truncations at every structure boundary: typed errors from the reader, findings or a
    /// "cannot check" from check, never a crash.
    @Test func truncatedFiles() throws {
        let d = Scratch("vhdchk-t")
        let (path, v) = try clean(d)
        let bytes = try fileBytes(path)
        for n in [0, 100, 511, 512, 513, 0x600, 0x1000, Int(VHDLayout.batOffset) + 2, Int(v.payloadStart), Int(v.payloadStart) + 5000, bytes.count - 512, bytes.count - 1] {
            let src = MemorySource(Array(bytes.prefix(n)))
            do { _ = try VHDFile(source: src) } catch is FormatError {} catch { Issue.record("\(n): untyped \(error)") }
            do { _ = try VHDCheck.run(source: src) } catch is VHDCheck.CannotCheck {} catch { Issue.record("\(n): \(error)") }
        }
        // Cut in the middle of the last block: the trailing footer is gone, the copy names it.
        let src = MemorySource(Array(bytes.prefix(bytes.count - 4096)))
        let r = try VHDCheck.run(source: src)
        #expect(r.isCorrupt && r.findings.contains { $0.structure == "footer" })
    }

    /// Every byte of the footer copy, dynamic header and BAT flipped in turn: the reader either
    /// reads or throws a typed error.
    @Test func everyStructureByteFlipped() throws {
        let d = Scratch("vhdchk-all")
        let (path, v) = try clean(d)
        let bytes = try fileBytes(path)
        let spots = Array(0..<512) + Array(0x200..<0x600) + Array(Int(VHDLayout.batOffset)..<Int(VHDLayout.batOffset) + 16)
            + Array(Int(v.footerOffset)..<Int(v.footerOffset) + 100)
        for at in spots {
            var b = bytes
            b[at] ^= 0xA5
            let src = MemorySource(b)
            do {
                let f = try VHDFile(source: src)
                _ = try f.read(at: 0, count: Int(min(f.size, 1 << 20)))
            } catch is FormatError {} catch is VHDUnsupportedError {} catch is BlockSourceError {} catch { Issue.record("\(at): \(error)") }
            _ = try VHDCheck.run(source: src)
        }
    }

    /// Huge sizes and differencing disks: typed errors.
    @Test func hugeSizesAndDifferencing() throws {
        let d = Scratch("vhdchk-huge")
        let (path, v) = try clean(d)
        var footer = v.footer
        footer.currentSize = 1 << 62
        footer.originalSize = 1 << 62
        let fb = footer.serialize()
        try poke(path, 0, fb)
        try poke(path, v.footerOffset, fb)
        #expect { _ = try VHDFile.open(path: path) } throws: { ($0 as? FormatError)?.reason.contains("max table entries") == true }
        try expectFinding(path, "dynamic disk header", 0x21C, "cannot map")
        try poke(path, 0, v.footer.serialize())
        try poke(path, v.footerOffset, v.footer.serialize())
        // A header claiming 2^32-1 entries: bounded by the file, refused.
        var h = v.dynamicHeader!
        h.maxTableEntries = 0xFFFF_FFF0
        try poke(path, 0x200, h.serialize())
        #expect { _ = try VHDFile.open(path: path) } throws: { ($0 as? FormatError)?.reason.contains("past the end") == true }
        // Fixed footer with a size beyond the file.
        let (fpath, fv) = try clean(d, fixed: true)
        var ff = fv.footer
        ff.currentSize = 1 << 50
        try poke(fpath, fv.footerOffset, ff.serialize())
        #expect { _ = try VHDFile.open(path: fpath) } throws: { ($0 as? FormatError)?.structure == "footer" }
        try expectFinding(fpath, "file", 0, "must be")
        // Differencing: recognised, refused with its own error.
        var df = v.footer
        df.currentSize = v.virtualSize
        df.originalSize = v.virtualSize
        df.diskTypeRaw = VHD.DiskType.differencing.rawValue
        h.maxTableEntries = UInt32(v.layout.blockCount)
        try poke(path, 0x200, h.serialize())
        try poke(path, 0, df.serialize())
        try poke(path, v.footerOffset, df.serialize())
        #expect(throws: VHDUnsupportedError.self) { _ = try VHDFile.open(path: path) }
    }

    /// Detection: dynamic by the copy at 0, fixed by the checksummed footer at the end; a raw
    /// file that merely ends in "conectix" is raw.
    @Test func detection() throws {
        let d = Scratch("vhd-detect")
        let (dyn, _) = try clean(d)
        let (fixed, _) = try clean(d, fixed: true)
        #expect(try DiskFormatRegistry.detect(path: dyn)?.name == "vhd")
        #expect(try DiskFormatRegistry.detect(path: fixed)?.name == "vhd")
        let raw = d.file("r.raw")
        let r = try RawFile.create(path: raw, size: MiB)
        try r.write(at: MiB - 512, Array("conectix".utf8))
        #expect(try DiskFormatRegistry.detect(path: raw) == nil)
        #expect(try VHDDriver().info(path: fixed)["type"] == .string("fixed"))
        #expect(try VHDDriver().open(path: dyn).size == 7 * MiB)
    }
}
