import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// The committed qcow2 seed corpus (Tests/FuzzCorpus/QCOW2) replayed through `fuzzQCOW2One`,
/// with every crash the fuzzer ever finds (`crash-*`) kept beside the seeds as a regression test.
@Suite struct QCOW2FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("FuzzCorpus/QCOW2").path

    /// Regenerates the seeds; compiled in every build, run only with
    /// `-Xswiftc -DBOOTLAB_REGEN_FUZZ_CORPUS` (it rewrites committed files).
    #if BOOTLAB_REGEN_FUZZ_CORPUS
    @Test func regenerateCorpus() throws { try Self.regenerate() }
    #endif

    static func regenerate() throws {
        let d = Scratch("q2corpus")
        var seeds: [(String, String)] = []
        func qemu(_ name: String, _ create: [String], _ size: String, _ io: [String]) throws {
            let p = d.file(name + ".qcow2")
            try Q2.must(["qemu-img", "create", "-q", "-f", "qcow2"] + create + [p, size])
            if !io.isEmpty { try Q2.must(["qemu-io", "-f", "qcow2"] + io.flatMap { ["-c", $0] } + [p]) }
            seeds.append((p, name))
        }
        try qemu("qemu-512-64k", ["-o", "cluster_size=512"], "64k", ["write -P 0x3c 0 4k", "write -z 8k 1k"])
        try qemu("qemu-v2-4k", ["-o", "cluster_size=4k,compat=0.10"], "1M", ["write -P 0x41 4k 8k"])
        try qemu("qemu-backed", ["-o", "cluster_size=1k", "-u", "-b", "base.raw", "-F", "raw"], "256k", [])
        // Compressed clusters (qemu-img convert -c) of a text-like disk.
        let raw = d.file("t.raw")
        let text = Array(String(repeating: "compressible qcow2 cluster text ", count: 200).utf8)
        _ = try Q2.rawFile(raw, size: 65536, writes: [])
        let rf = try RawFile(path: raw, writable: true)
        try rf.write(at: 0, text)
        try rf.flush()
        let c = d.file("c.qcow2")
        try Q2.must("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4k", raw, c)
        seeds.append((c, "qemu-compressed-4k"))
        // Ours.
        for (bits, name) in [(9, "own-512"), (12, "own-4k")] as [(UInt32, String)] {
            let src = Q2.Sparse(size: 1 << 20, dataRanges: [0..<600, 70_000..<80_000])
            let p = d.file(name + ".qcow2")
            try SparseImageWriter.write(try QCOW2View(source: src, options: QCOW2ViewOptions(clusterBits: bits)), toPath: p,
                                        options: SparseImageWriter.Options(threads: 1, sync: false))
            seeds.append((p, name))
        }
        try FileManager.default.createDirectory(atPath: Self.corpus, withIntermediateDirectories: true)
        for (p, name) in seeds {
            let b = try Q2.bytes(p)
            try Data(b).write(to: URL(fileURLWithPath: Self.corpus + "/seed-\(name)"))
            // Mutants: one byte of the L1 and one of the first L2 entry flipped.
            if name.hasPrefix("own") || name == "qemu-compressed-4k" {
                let h = try QCOW2Header.parse(b)
                var m = b
                m[Int(h.l1TableOffset) + 6] ^= 0x10
                try Data(m).write(to: URL(fileURLWithPath: Self.corpus + "/mut-\(name)-l1"))
                let l2 = Int(QCOW2BE.u64(b, Int(h.l1TableOffset)) & QCOW2.offsetMask)
                if l2 > 0, l2 + 8 <= b.count {
                    var m2 = b
                    m2[l2 + 1] ^= 0x40
                    try Data(m2).write(to: URL(fileURLWithPath: Self.corpus + "/mut-\(name)-l2"))
                }
            }
        }
    }

    @Test func corpusRunsThroughHarness() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).sorted()
        #expect(names.filter { $0.hasPrefix("seed-") }.count >= 6)
        let total = try names.reduce(0) { $0 + (try Q2.bytes(Self.corpus + "/" + $1)).count }
        #expect(total < 2_000_000)
        for n in names {
            let b = try Q2.bytes(Self.corpus + "/" + n)
            b.withUnsafeBytes { fuzzQCOW2One($0) }
            // Seeds must stay valid, so the fuzzer starts from files that parse all the way.
            if n.hasPrefix("seed-") {
                let f = try QCOW2File(source: MemorySource(b), name: n) { _, _ in ZeroSource(size: 1 << 20) }
                #expect(f.size > 0, "\(n)")
                #expect(try f.read(at: 0, count: Int(f.size)).count == Int(f.size), "\(n)")
                let r = try QCOW2Check.run(source: MemorySource(b))
                #expect(!r.isCorrupt, "\(n): \(r.findings)")
            }
        }
    }

    /// Deterministic mutations of every seed (bytes flipped, set to 0xff or 0, in the header
    /// and tables most of the time) through the harness: a short fuzzing run in every test run.
    @Test func mutatedSeedsNeverCrash() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).filter { $0.hasPrefix("seed-") }.sorted()
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x }
        for n in names {
            let seed = try Q2.bytes(Self.corpus + "/" + n)
            for _ in 0..<150 {
                var m = seed
                for _ in 0..<(1 + Int(next() % 4)) {
                    let hot = next() % 4 != 0
                    let at = Int(next() % UInt64(hot ? min(m.count, 4096) : m.count))
                    switch next() % 3 {
                    case 0: m[at] ^= UInt8(truncatingIfNeeded: next()) | 1
                    case 1: m[at] = 0xFF
                    default: m[at] = 0
                    }
                }
                if next() % 10 == 0 { m.removeLast(Int(next() % UInt64(m.count))) }
                m.withUnsafeBytes { fuzzQCOW2One($0) }
            }
        }
    }
}
