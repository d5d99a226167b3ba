import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// The committed FuzzVHDX seed corpus, and every crash the fuzzer ever found (files named
/// `crash-*` in the same folder) replayed as regression tests.
@Suite struct VHDXReaderFuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("FuzzCorpus/VHDX").path

    /// Regenerates the seeds: `ci/regen-fuzz-corpus-vhdx` (a maintenance tool that rewrites committed
    /// files, so not a check). The test that runs it exists only in builds with
    /// `-Xswiftc -DBOOTLAB_REGEN_FUZZ_CORPUS`, so an ordinary `swift test` neither runs nor skips it;
    /// the body below is compiled (type-checked) in every build. `corpusRunsThroughHarness` below
    /// always runs.
    #if BOOTLAB_REGEN_FUZZ_CORPUS
    @Test func regenerateCorpus() throws { try Self.regenerate() }
    #endif

    static func regenerate() throws {
        let d = Scratch("corpus")
        var seeds: [(String, String)] = []
        for (size, bs) in [("512", "1M"), ("1M", "8M"), ("3M", "1M"), ("5M", "32M")] {
            let p = d.file("q-\(size)-\(bs).vhdx")
            try run("qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=\(bs)", p, size)
            if size != "512" { try run("qemu-io", "-f", "vhdx", "-c", "write -P 0x3c 0 8k", p) }
            seeds.append((p, "qemu-\(size)-\(bs)"))
        }
        let own = d.file("own.vhdx")
        let f = try VHDXFile.createDynamic(path: own, virtualSize: 2 << 20, blockSize: 1 << 20, logicalSectorSize: 4096, seed: [1])
        try [UInt8](repeating: 7, count: 4096).withUnsafeBytes { try f.write(at: 4096, from: $0) }
        seeds.append((own, "own-4k"))
        let child = d.file("child.vhdx")
        let c = try VHDXFile.createDifferencing(path: child, parentPath: own)
        try [UInt8](repeating: 9, count: 512).withUnsafeBytes { try c.write(at: 4096, from: $0) }
        seeds.append((child, "own-child"))
        try FileManager.default.createDirectory(atPath: Self.corpus, withIntermediateDirectories: true)
        for (p, name) in seeds {
            let packed = try VHDXFuzzLayout.pack(try RawFile(path: p))
            try Data(packed).write(to: URL(fileURLWithPath: Self.corpus + "/seed-\(name)"))
        }
    }

    @Test func corpusRunsThroughHarness() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).sorted()
        #expect(names.filter { $0.hasPrefix("seed-") }.count >= 6)
        let total = try names.reduce(0) { $0 + (try fileBytes(Self.corpus + "/" + $1)).count }
        #expect(total < 2_000_000)
        for n in names {
            let b = try fileBytes(Self.corpus + "/" + n)
            b.withUnsafeBytes { fuzzVHDXOne($0) }
            // The qemu and dynamic seeds must still be valid VHDX through the slot layout, so the
            // fuzzer starts from files that parse all the way.
            if n.hasPrefix("seed-qemu") || n == "seed-own-4k" {
                let f = try VHDXFile(source: VHDXFuzzLayout.unpack(b))
                #expect(f.size > 0, "\(n)")
                if n.contains("-1M-8M") || n.contains("own") {
                    #expect(try f.read(at: 4096, count: 1) != [0], "\(n)")
                }
            }
        }
    }
}
