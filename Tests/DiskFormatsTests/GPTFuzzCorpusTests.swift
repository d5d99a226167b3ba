import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// The committed GPT fuzz seeds (small GPT disks made by our writer with 512- and 4096-byte
/// sectors, 4–128 entries, one with a 256-byte entry size, a hybrid MBR, and damaged variants)
/// and any `crash-*` the fuzzer finds, replayed through `fuzzGPTOne`.
@Suite struct GPTFuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("FuzzCorpus/GPT").path

    /// The seeds, deterministically: name and bytes.
    static func seeds() throws -> [(String, [UInt8])] {
        var out: [(String, [UInt8])] = []
        func disk(_ size: UInt64, _ ss: Int, count: Int, entrySize: Int = 128, parts: Int) throws -> [UInt8] {
            let arraySectors = UInt64((count * entrySize + ss - 1) / ss)
            let first = 2 + arraySectors, last = size / UInt64(ss) - 2 - arraySectors
            let span = (last - first + 1) / UInt64(parts)
            let types = [GPTPartitionType.efiSystem, GPTPartitionType.linuxFileSystem, GPTPartitionType.microsoftBasicData]
            let p = (0..<parts).map { i in
                GPT.Partition(number: i * 2 + 1, typeGUID: types[i % 3], uniqueGUID: GUID.derived(seed: [UInt8(i)], label: "seed"),
                              firstLBA: first + UInt64(i) * span, lastLBA: first + UInt64(i + 1) * span - 1,
                              attributes: i == 0 ? 1 : 4, name: "part\(i + 1)")
            }
            let g = try GPT.standard(diskSize: size, sectorSize: ss, diskGUID: GUID.derived(seed: [9], label: "disk"),
                                     partitions: p, entryCount: count, entrySize: entrySize)
            var b = [UInt8](repeating: 0, count: Int(size))
            b.put(g.encodePrimaryArea(), at: 0)
            b.put(g.encodeBackupArea(), at: Int(g.backupArea.lowerBound))
            return b
        }
        out.append(("seed-512-128e-2p", try disk(64 << 10, 512, count: 128, parts: 2)))
        out.append(("seed-512-4e-2p", try disk(8 << 10, 512, count: 4, parts: 2)))
        out.append(("seed-512-16e-256b-3p", try disk(32 << 10, 512, count: 16, entrySize: 256, parts: 3)))
        out.append(("seed-4096-128e-1p", try disk(64 << 10, 4096, count: 128, parts: 1)))
        out.append(("seed-4096-4e-2p", try disk(48 << 10, 4096, count: 4, parts: 2)))
        // A hybrid MBR: the 0xEE record plus a FAT record.
        var hybrid = try disk(8 << 10, 512, count: 4, parts: 2)
        hybrid.put([0x00, 0, 0, 0, 0x0C, 0, 0, 0, 8, 0, 0, 0, 2, 0, 0, 0], at: 0x1CE)
        out.append(("seed-512-hybrid-mbr", hybrid))
        // Damaged: primary header CRC, primary array CRC, both headers.
        var h = try disk(8 << 10, 512, count: 4, parts: 2)
        h[512 + 60] ^= 1
        out.append(("seed-512-primary-header-crc", h))
        var a = try disk(8 << 10, 512, count: 4, parts: 2)
        a[1024 + 20] ^= 1
        out.append(("seed-512-primary-array-crc", a))
        var both = h
        both[both.count - 512 + 60] ^= 1
        out.append(("seed-512-both-headers", both))
        return out
    }

    /// The committed seeds are what `seeds()` makes; with BOOTLAB_REGEN_FUZZ_CORPUS=1 in the
    /// environment they are rewritten first (`swift test --filter GPTFuzzCorpusTests`).
    @Test func committedSeedsAreCurrent() throws {
        if ProcessInfo.processInfo.environment["BOOTLAB_REGEN_FUZZ_CORPUS"] == "1" {
            try FileManager.default.createDirectory(atPath: Self.corpus, withIntermediateDirectories: true)
            for (name, bytes) in try Self.seeds() { try Data(bytes).write(to: URL(fileURLWithPath: Self.corpus + "/" + name)) }
        }
        for (name, bytes) in try Self.seeds() {
            #expect(try fileBytes(Self.corpus + "/" + name) == bytes, "\(name) is stale: regenerate the corpus")
        }
    }

    @Test func corpusRunsThroughHarness() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).sorted()
        #expect(names.filter { $0.hasPrefix("seed-") }.count >= 9)
        let total = try names.reduce(0) { $0 + (try fileBytes(Self.corpus + "/" + $1)).count }
        #expect(total < 500_000)
        for n in names {
            let b = try fileBytes(Self.corpus + "/" + n)
            b.withUnsafeBytes { fuzzGPTOne($0) }
            // The undamaged seeds are valid GPTs, so the fuzzer starts from files that parse.
            if n.hasPrefix("seed-"), !n.contains("crc"), !n.contains("both") {
                let ss = n.hasPrefix("seed-4096") ? 4096 : 512
                let g = try GPT.read(from: MemorySource(b), sectorSize: ss)
                #expect(!g.partitions.isEmpty && g.backupProblem == nil && !g.usedBackupHeader, "\(n)")
            }
        }
    }

    /// A deterministic stand-in for a fuzzing session: every seed mutated a few hundred times
    /// (bytes flipped in the table areas, files cut) through the harness.
    @Test func mutatedSeedsNeverCrash() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).sorted().filter { $0.hasPrefix("seed-") }
        var rng = Bytes(seed: 0x475054)
        for n in names {
            let seed = try fileBytes(Self.corpus + "/" + n)
            for _ in 0..<200 {
                var b = seed
                for _ in 0..<(1 + Int(rng.next() % 4)) {
                    // Mostly the first 3 blocks and the last ones, where the structures are.
                    let region = Int(rng.next() % 3)
                    let at = region == 0 ? Int(rng.next() % UInt64(min(b.count, 12288)))
                        : region == 1 ? b.count - 1 - Int(rng.next() % UInt64(min(b.count, 12288))) : Int(rng.next() % UInt64(b.count))
                    b[at] ^= UInt8(truncatingIfNeeded: 1 + rng.next() % 255)
                }
                if rng.next() % 8 == 0 { b = Array(b.prefix(Int(rng.next() % UInt64(b.count)))) }
                b.withUnsafeBytes { fuzzGPTOne($0) }
            }
        }
    }
}
