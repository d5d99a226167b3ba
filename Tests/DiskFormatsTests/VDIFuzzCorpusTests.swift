import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// The committed VDI fuzz seeds and any `crash-*` the fuzzer finds, replayed through `fuzzVDIOne`.
@Suite struct VDIFuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("FuzzCorpus/VDI").path

    #if BOOTLAB_REGEN_FUZZ_CORPUS
    @Test func regenerateCorpus() throws { try Self.regenerate() }
    #endif

    static func regenerate() throws {
        let d = Scratch("vdi-corpus")
        var seeds: [(String, [UInt8])] = []
        let own = d.file("own.vdi")
        try writeVDI(PatternSource(size: 5 << 20, dataRanges: [0..<2048, (2 << 20) - 512..<(2 << 20) + 512]), own,
                     .init(seed: Array(repeating: 1, count: 16), pointer: Array("ptr".utf8)))
        seeds.append(("own", try SectorRecordFuzzLayout.pack(try RawFile(path: own))))
        for opts in ["static=off", "static=on"] {
            let raw = d.file("q.raw"), p = d.file("q.vdi")
            _ = try RawFile.create(path: raw, size: 3 << 20)
            try RawFile(path: raw, writable: true).write(at: 1 << 20, [UInt8](repeating: 0x3C, count: 1024))
            try run("qemu-img", "convert", "-f", "raw", "-O", "vdi", "-o", opts, raw, p)
            seeds.append(("qemu-\(opts.replacingOccurrences(of: "=", with: "_"))", try SectorRecordFuzzLayout.pack(try RawFile(path: p))))
        }
        let bytes = try fileBytes(own)
        func mutated(_ name: String, _ change: (inout [UInt8]) -> Void) throws {
            var b = bytes
            change(&b)
            let p = d.file("m.vdi")
            try Data(b).write(to: URL(fileURLWithPath: p))
            seeds.append(("mut-\(name)", try SectorRecordFuzzLayout.pack(try RawFile(path: p))))
        }
        let map = Int(VDILayout.blockMapOffset)
        try mutated("map-entry") { $0[map + 1] = 0x01 }
        try mutated("map-duplicate") { b in b[map + 8] = 0; b[map + 9] = 0; b[map + 10] = 0; b[map + 11] = 0 }
        try mutated("map-offset") { $0[0x157] = 0x70 }
        try mutated("disk-size") { $0[0x177] = 0x40 }
        try FileManager.default.createDirectory(atPath: Self.corpus, withIntermediateDirectories: true)
        for (name, b) in seeds { try Data(b).write(to: URL(fileURLWithPath: Self.corpus + "/seed-\(name)")) }
    }

    @Test func corpusRunsThroughHarness() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).sorted()
        #expect(names.filter { $0.hasPrefix("seed-") }.count >= 7)
        let total = try names.reduce(0) { $0 + (try fileBytes(Self.corpus + "/" + $1)).count }
        #expect(total < 500_000)
        for n in names {
            let b = try fileBytes(Self.corpus + "/" + n)
            b.withUnsafeBytes { fuzzVDIOne($0) }
            if n.hasPrefix("seed-own") || n.hasPrefix("seed-qemu") {
                let f = try VDIFile(source: SectorRecordFuzzLayout.unpack(b))
                #expect(f.size > 0, "\(n)")
                #expect(!(try VDICheck.run(source: SectorRecordFuzzLayout.unpack(b))).isCorrupt, "\(n)")
            }
        }
    }

    /// A deterministic stand-in for a fuzzing session: every seed mutated a few hundred times
    /// (bytes flipped, records cut) through the harness. Any crash or hang fails the run.
    @Test func mutatedSeedsNeverCrash() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).sorted().filter { $0.hasPrefix("seed-") }
        var rng = SynthRandom(seed: 0x5644)
        for n in names {
            let seed = try fileBytes(Self.corpus + "/" + n)
            for _ in 0..<150 {
                var b = seed
                for _ in 0..<(1 + Int(rng.next(below: 4))) {
                    let at = Int(rng.next(below: UInt64(b.count)))
                    b[at] ^= UInt8(truncatingIfNeeded: 1 + rng.next(below: 255))
                }
                if rng.next(below: 8) == 0 { b = Array(b.prefix(Int(rng.next(below: UInt64(b.count))))) }
                b.withUnsafeBytes { fuzzVDIOne($0) }
            }
        }
    }
}
