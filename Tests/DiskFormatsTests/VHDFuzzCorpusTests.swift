import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// The committed VHD fuzz seeds (`SectorRecordFuzzLayout` descriptions of files made by our
/// view and by qemu-img, plus mutations of them) and any `crash-*` the fuzzer finds, replayed
/// through `fuzzVHDOne`.
@Suite struct VHDFuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("FuzzCorpus/VHD").path

    /// Rewrites the seeds; compiled always, run only in builds with `-Xswiftc -DBOOTLAB_REGEN_FUZZ_CORPUS`.
    #if BOOTLAB_REGEN_FUZZ_CORPUS
    @Test func regenerateCorpus() throws { try Self.regenerate() }
    #endif

    static func regenerate() throws {
        let d = Scratch("vhd-corpus")
        var seeds: [(String, [UInt8])] = []
        let data = PatternSource(size: 5 << 20, dataRanges: [0..<2048, (2 << 20) - 512..<(2 << 20) + 512])
        for sf in VHDSubformat.allCases {
            let p = d.file("own-\(sf.rawValue).vhd")
            try writeVHD(data, p, .init(subformat: sf, seed: Array(repeating: 1, count: 16), pointer: sf == .dynamic ? Array("ptr".utf8) : []))
            let packed = try SectorRecordFuzzLayout.pack(try RawFile(path: p))
            seeds.append(("own-\(sf.rawValue)", packed))
        }
        for opts in ["subformat=dynamic", "subformat=fixed,force_size=on"] {
            let raw = d.file("q.raw"), p = d.file("q.vhd")
            _ = try RawFile.create(path: raw, size: 3 << 20)
            try RawFile(path: raw, writable: true).write(at: 1 << 20, [UInt8](repeating: 0x3C, count: 1024))
            try run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", opts, raw, p)
            seeds.append(("qemu-\(opts.replacingOccurrences(of: ",", with: "-").replacingOccurrences(of: "=", with: "_"))",
                          try SectorRecordFuzzLayout.pack(try RawFile(path: p))))
        }
        // Mutations of the dynamic seed's file: flipped footer checksum, header checksum, a BAT
        // entry past EOF, a huge current size.
        let own = try fileBytes(d.file("own-dynamic.vhd"))
        func mutated(_ name: String, _ change: (inout [UInt8]) -> Void) throws {
            var b = own
            change(&b)
            let p = d.file("m.vhd")
            try Data(b).write(to: URL(fileURLWithPath: p))
            seeds.append(("mut-\(name)", try SectorRecordFuzzLayout.pack(try RawFile(path: p))))
        }
        try mutated("footer-checksum") { $0[$0.count - 512 + 66] ^= 0xFF }
        try mutated("header-checksum") { $0[0x200 + 37] ^= 0xFF }
        try mutated("bat-past-eof") { $0[Int(VHDLayout.batOffset)] = 0x7F }
        try mutated("huge-size") { b in for at in [48, b.count - 512 + 48] { b[at] = 0x40 } }
        try FileManager.default.createDirectory(atPath: Self.corpus, withIntermediateDirectories: true)
        for (name, bytes) in seeds { try Data(bytes).write(to: URL(fileURLWithPath: Self.corpus + "/seed-\(name)")) }
    }

    @Test func corpusRunsThroughHarness() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).sorted()
        #expect(names.filter { $0.hasPrefix("seed-") }.count >= 8)
        let total = try names.reduce(0) { $0 + (try fileBytes(Self.corpus + "/" + $1)).count }
        #expect(total < 500_000)
        for n in names {
            let b = try fileBytes(Self.corpus + "/" + n)
            b.withUnsafeBytes { fuzzVHDOne($0) }
            // Unmutated seeds still unpack to valid VHDs, so the fuzzer starts from files that parse.
            if n.hasPrefix("seed-own") || n.hasPrefix("seed-qemu") {
                let f = try VHDFile(source: SectorRecordFuzzLayout.unpack(b))
                #expect(f.size > 0, "\(n)")
                #expect(!(try VHDCheck.run(source: SectorRecordFuzzLayout.unpack(b))).isCorrupt, "\(n)")
            }
        }
    }

    /// A deterministic stand-in for a fuzzing session: every seed mutated a few hundred times
    /// (bytes flipped, records cut) through the harness. Any crash or hang fails the run.
    @Test func mutatedSeedsNeverCrash() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).sorted().filter { $0.hasPrefix("seed-") }
        var rng = SynthRandom(seed: 0x5648)
        for n in names {
            let seed = try fileBytes(Self.corpus + "/" + n)
            for _ in 0..<150 {
                var b = seed
                for _ in 0..<(1 + Int(rng.next(below: 4))) {
                    let at = Int(rng.next(below: UInt64(b.count)))
                    b[at] ^= UInt8(truncatingIfNeeded: 1 + rng.next(below: 255))
                }
                if rng.next(below: 8) == 0 { b = Array(b.prefix(Int(rng.next(below: UInt64(b.count))))) }
                b.withUnsafeBytes { fuzzVHDOne($0) }
            }
        }
    }
}
