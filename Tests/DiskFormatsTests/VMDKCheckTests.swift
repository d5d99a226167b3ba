import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// Bad input: truncations, a flipped byte in each structure, loops, offsets past the end, huge
/// sizes — typed errors or check findings, never a crash; the fuzz corpus replayed.
@Suite struct VMDKCheckTests {
    /// A small valid file of ours: 2 MiB + 512, data in grains 0, 1 and the last.
    static func sample(_ d: Scratch, _ name: String = "s.vmdk", subformat: String? = nil) throws -> (path: String, raw: RawFile) {
        let size = 2 * VMDKT.MiB + 512
        let raw = try VMDKT.raw(d.file(name + ".raw"), size: size, ranges: [0..<70_000, size - 512..<size])
        let p = d.file(name)
        try VMDKT.convert(raw, p, subformat: subformat)
        return (p, raw)
    }

    /// Opens and reads everything; returns the error, if any (a crash fails the test run).
    static func readAll(_ path: String) -> Error? {
        do {
            let f = try VMDKFile.open(path: path)
            _ = try f.read(at: 0, count: Int(f.size))
            _ = try f.extents(in: 0..<f.size)
            return nil
        } catch { return error }
    }

    @Test func truncatedFiles() throws {
        let d = Scratch("vmdk-trunc")
        for sub in [nil, "streamOptimized"] {
            let (p, _) = try Self.sample(d, "t-\(sub ?? "sparse").vmdk", subformat: sub)
            let full = try VMDKT.bytes(p)
            for cut in [0, 3, 511, 512, 1000, 21 * 512, 30 * 512, 64 * 1024, full.count - 512, full.count - 1] {
                let t = d.file("cut.vmdk")
                try VMDKT.write(t, Array(full.prefix(cut)))
                let e = Self.readAll(t)
                let r = try? VMDKCheck.run(path: t)
                // A typed read error, or (a cut inside the last grain's padding still reads) a check finding.
                #expect(e is FormatError || e is BlockSourceError || (e == nil && r?.isCorrupt == true),
                        "cut at \(cut) (\(sub ?? "sparse")): \(String(describing: e)), check \(String(describing: r?.findings))")
                #expect(r == nil || r!.isCorrupt, "cut at \(cut): check \(String(describing: r?.findings))")
            }
        }
    }

    @Test func flippedBytesInEachStructure() throws {
        let d = Scratch("vmdk-flip")
        let (p, raw) = try Self.sample(d)
        let full = try VMDKT.bytes(p)
        let gdAt = Int(full.le64(56)) * 512, rgdAt = Int(full.le64(48)) * 512
        let gtAt = Int(full.le32(gdAt)) * 512
        // header magic, version, grain size, gdOffset; descriptor CID and extent line; GD; RGD; a GT entry.
        let descText = String(decoding: full[512..<1024], as: UTF8.self)
        let extentAt = 512 + descText.distance(from: descText.startIndex, to: descText.range(of: "RW ")!.lowerBound) + 3
        let cases: [(String, Int, UInt8)] = [
            ("magic", 0, 0x01), ("version", 4, 0x08), ("grain size", 20, 0x01), ("gdOffset", 56, 0x40),
            ("descriptor extent size", extentAt, 0x02), ("GD entry", gdAt, 0x80), ("RGD entry", rgdAt, 0x01),
            ("GT entry low byte", gtAt, 0x01), ("GT entry high byte", gtAt + 3, 0x10),
        ]
        for (what, at, mask) in cases {
            var b = full
            b[at] ^= mask
            let t = d.file("flip.vmdk")
            try VMDKT.write(t, b)
            let e = Self.readAll(t)
            let report = try? VMDKCheck.run(path: t)
            let caught = (report?.isCorrupt ?? true)
            #expect(caught, "\(what): check found nothing; read error \(String(describing: e))")
            // Whatever the reader says is typed, or it reads (then check has said why not to trust it).
            #expect(e == nil || e is FormatError || e is BlockSourceError, "\(what): \(String(describing: e))")
        }
        _ = raw
    }

    /// A flipped byte in a grain-table entry: caught by our check and by qemu-img check.
    @Test(.requires(missing: toolsMissing(["qemu-img"])))
    func gtEntryFlipCaughtByBothChecks() throws {
        let d = Scratch("vmdk-gte")
        let (p, _) = try Self.sample(d)
        var b = try VMDKT.bytes(p)
        let gdAt = Int(b.le64(56)) * 512
        let gtAt = Int(b.le32(gdAt)) * 512
        b[gtAt + 4 + 2] ^= 0x40  // grain 1's entry: far past the end of the file
        let t = d.file("gte.vmdk")
        try VMDKT.write(t, b)
        let ours = try VMDKCheck.run(path: t)
        #expect(ours.isCorrupt && ours.exitCode == 2)
        #expect(ours.findings.contains { $0.structure == "grain table 0" && $0.message.contains("redundant copy") }, "\(ours.findings)")
        #expect(ours.findings.contains { $0.message.contains("past the end of the file") }, "\(ours.findings)")
        let q = try runTool(["qemu-img", "check", "-f", "vmdk", t])
        #expect(q.status != 0, "qemu-img check: \(q.stdout) \(q.stderr)")
        #expect(Self.readAll(t) is FormatError)
    }

    @Test func loopsAndOverlaps() throws {
        let d = Scratch("vmdk-loop")
        // 40 MiB: two grain tables; point GD entry 1 at table 0 (a loop), then at the GD itself.
        let raw = try VMDKT.raw(d.file("l.raw"), size: 40 * VMDKT.MiB, ranges: [0..<10, 33 * VMDKT.MiB..<33 * VMDKT.MiB + 10])
        let p = d.file("l.vmdk")
        try VMDKT.convert(raw, p)
        let full = try VMDKT.bytes(p)
        let gdAt = Int(full.le64(56)) * 512
        for (what, value) in [("shared table", full.le32(gdAt)), ("table on the GD", UInt32(gdAt / 512)), ("table on the header", 0 + 1),
                              ("past EOF", 0x00ff_ffff)] {
            var b = full
            b.putLE32(value, at: gdAt + 4)
            let t = d.file("loop.vmdk")
            try VMDKT.write(t, b)
            #expect(Self.readAll(t) is FormatError, "\(what)")
            #expect(try VMDKCheck.run(path: t).isCorrupt, "\(what)")
        }
        // Two grain entries naming the same grain: overlapping grains.
        var b = full
        let gtAt = Int(full.le32(gdAt)) * 512
        b.putLE32(full.le32(gtAt), at: gtAt + 8)
        let t = d.file("dup.vmdk")
        try VMDKT.write(t, b)
        let r = try VMDKCheck.run(path: t)
        #expect(r.findings.contains { $0.message.contains("shares sector") }, "\(r.findings)")
    }

    @Test func hugeSizesAreBounded() throws {
        let d = Scratch("vmdk-huge")
        var h = VMDKSparseHeader()
        h.capacity = VMDK.maxCapacitySectors
        h.grainSize = 1
        h.gdOffset = 1
        let t = d.file("h.vmdk")
        try VMDKT.write(t, h.serialize() + [UInt8](repeating: 0, count: 4096))
        #expect(Self.readAll(t) is FormatError)
        h.capacity = UInt64.max
        try VMDKT.write(t, h.serialize())
        #expect(Self.readAll(t) is FormatError)
        h.capacity = 1 << 20; h.grainSize = 128; h.numGTEsPerGT = UInt32.max
        try VMDKT.write(t, h.serialize())
        #expect(Self.readAll(t) is FormatError)
        // A descriptor claiming a huge size, and garbage.
        try VMDKT.write(t, Array("# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 99999999999999999999 FLAT \"x\" 0\n".utf8))
        #expect(Self.readAll(t) is FormatError)
        try VMDKT.write(t, Array("# Disk DescriptorFile\n\u{1}\u{2}garbage\n".utf8))
        #expect(Self.readAll(t) is FormatError)
        #expect(throws: VMDKCheck.CannotCheck.self) { try VMDKCheck.run(source: MemorySource([1, 2, 3, 4, 5])) }
    }

    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("FuzzCorpus/VMDK").path

    /// Regenerates the seeds (a maintenance step that rewrites committed files): built only with
    /// `-Xswiftc -DBOOTLAB_REGEN_FUZZ_CORPUS`, type-checked always.
    #if BOOTLAB_REGEN_FUZZ_CORPUS
    @Test func regenerateCorpus() throws { try Self.regenerate() }
    #endif

    static func regenerate() throws {
        let d = Scratch("vmdk-corpus")
        var seeds: [(String, String)] = []
        // Small files: 4 KiB grains for ours, one 64 KiB grain for qemu's.
        let raw = try VMDKT.raw(d.file("r.raw"), size: 128 * VMDKT.KiB + 512, ranges: [0..<300, 70_000..<70_100, 128 * VMDKT.KiB..<128 * VMDKT.KiB + 512])
        try VMDKT.convert(ZeroSource(size: 512), d.file("own-512.vmdk"), grain: 4096)
        seeds.append((d.file("own-512.vmdk"), "seed-own-512"))
        try VMDKT.convert(raw, d.file("own.vmdk"), grain: 4096)
        seeds.append((d.file("own.vmdk"), "seed-own-128K"))
        try VMDKT.convert(raw, d.file("own-s.vmdk"), subformat: "streamOptimized", grain: 4096)
        seeds.append((d.file("own-s.vmdk"), "seed-own-stream-128K"))
        let small = try VMDKT.raw(d.file("q.raw"), size: 64 * VMDKT.KiB, ranges: [0..<300, 60_000..<60_010])
        for sub in ["monolithicSparse", "streamOptimized"] {
            let p = d.file("q-\(sub).vmdk")
            try #require(try runTool(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=\(sub)", small.path, p]).status == 0)
            seeds.append((p, "seed-qemu-\(sub)-64K"))
        }
        let text = d.file("text.raw")
        let tf = try RawFile.create(path: text, size: 65536)  // one grain of text: dynamic Huffman blocks
        try tf.write(at: 0, Array((0..<900).map { "line \($0) of text \($0 % 7)\n" }.joined().utf8.prefix(65536)))
        try #require(try runTool(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", text, d.file("q-text.vmdk")]).status == 0)
        seeds.append((d.file("q-text.vmdk"), "seed-qemu-stream-text"))
        try FileManager.default.createDirectory(atPath: Self.corpus, withIntermediateDirectories: true)
        for (p, name) in seeds { try VMDKT.write(Self.corpus + "/" + name, try VMDKT.bytes(p)) }
        // Mutations: a grain table entry past the end, a directory loop, a stream cut before its footer.
        var b = try VMDKT.bytes(d.file("own.vmdk"))
        let gdAt = Int(b.le64(56)) * 512, gtAt = Int(b.le32(gdAt)) * 512
        b[gtAt + 3] ^= 0x10
        try VMDKT.write(Self.corpus + "/mut-gte-past-eof", b)
        b = try VMDKT.bytes(d.file("own.vmdk"))
        b.putLE32(UInt32(gdAt / 512), at: gdAt)
        try VMDKT.write(Self.corpus + "/mut-gd-on-itself", b)
        let s = try VMDKT.bytes(d.file("own-s.vmdk"))
        try VMDKT.write(Self.corpus + "/mut-stream-no-footer", Array(s.dropLast(1024)))
    }

    @Test func corpusRunsThroughHarness() throws {
        let dir = Self.corpus
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(names.filter { $0.hasPrefix("seed-") }.count >= 4)
        for n in names {
            let b = try VMDKT.bytes(dir + "/" + n)
            b.withUnsafeBytes { fuzzVMDKOne($0) }
            if n.hasPrefix("seed-") && !n.contains("mut") {
                let f = try VMDKFile(source: MemorySource(b))
                #expect(f.size > 0, "\(n)")
                #expect(try VMDKCheck.run(source: MemorySource(b)).corruptions == [], "\(n)")
            }
        }
    }

    /// A small in-test fuzzer: random byte flips in the structures of every seed (header,
    /// descriptor, directories, tables, markers, footer) through the harness. A crash fails the run.
    @Test func randomMutationsNeverCrash() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).sorted()
        var rng = Bytes(seed: 0xD15C)
        for n in names {
            let base = try VMDKT.bytes(Self.corpus + "/" + n)
            // Offsets that hold structures: the first 16 KiB and the last 2 KiB.
            let hot = Array(0..<min(base.count, 16384)) + Array(max(0, base.count - 2048)..<base.count)
            for _ in 0..<150 {
                var b = base
                for _ in 0..<(1 + Int(rng.next() % 4)) {
                    let at = hot[Int(rng.next() % UInt64(hot.count))]
                    b[at] = rng.next() % 3 == 0 ? 0xff : b[at] ^ UInt8(truncatingIfNeeded: 1 << (rng.next() % 8))
                }
                if rng.next() % 5 == 0 { b = Array(b.prefix(Int(rng.next() % UInt64(b.count + 1)))) }
                b.withUnsafeBytes { fuzzVMDKOne($0) }
            }
        }
    }

    /// Random damage to a compressed grain (qemu's dynamic-Huffman text grain) inside a file: the
    /// reader fails with a typed error or reads, never traps.
    @Test func damagedCompressedGrains() throws {
        let q = try VMDKT.bytes(Self.corpus + "/seed-qemu-stream-text")
        let qSize = Int(q.le32(65536 + 8))
        var rng = Bytes(seed: 0x1F1A7E)
        for _ in 0..<300 {
            var b = q
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                let at = 65536 + 12 + Int(rng.next() % UInt64(qSize))
                b[at] ^= UInt8(truncatingIfNeeded: 1 << (rng.next() % 8))
            }
            do {
                let f = try VMDKFile(source: MemorySource(b))
                _ = try f.read(at: 0, count: 65536)
            } catch {
                #expect(error is FormatError, "\(error)")
            }
        }
    }
}
