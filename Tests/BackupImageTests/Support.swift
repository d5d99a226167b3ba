import Foundation
import BlockCore
import DiskFormats
@testable import BackupImage

/// Deterministic test bytes (SplitMix64), so failures reproduce.
struct TestRNG {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func bytes(_ n: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        for i in stride(from: 0, to: n, by: 8) {
            let v = next()
            for k in 0..<min(8, n - i) { out[i + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(k))) }
        }
        return out
    }
    mutating func below(_ n: UInt64) -> UInt64 { next() % n }
}

/// A fresh directory per test.
func scratchDirectory() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-bli-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// Content with a mix of random, compressible and zero regions.
func makeContent(size: Int, seed: UInt64) -> [UInt8] {
    var rng = TestRNG(seed)
    var out = [UInt8](repeating: 0, count: size)
    var pos = 0
    while pos < size {
        let run = min(size - pos, Int(rng.below(200_000)) + 1)
        switch rng.below(3) {
        case 0: out.replaceSubrange(pos..<pos + run, with: rng.bytes(run))
        case 1: for k in 0..<run { out[pos + k] = UInt8(truncatingIfNeeded: (pos + k) / 97) }
        default: break
        }
        pos += run
    }
    return out
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func readFile(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

let testPassphrase = PassphraseSource.bytes(Array("correct horse battery staple".utf8))

func options(blockSize: UInt32 = 64 << 10, compression: BlockCodec = .zstd, encrypt: Bool = false, seed: String? = nil) -> BackupCreateOptions {
    var o = BackupCreateOptions()
    o.blockSize = blockSize
    o.compression = compression
    o.encrypt = encrypt
    o.passphrase = testPassphrase
    o.scrypt = .testing
    if let seed { o.imageID = BackupCreateOptions.imageID(seed: seed) }
    return o
}

/// Flips one bit of a file in place.
func flipBit(_ path: String, at offset: UInt64, bit: UInt8 = 0) throws {
    let f = try RawFile(path: path, writable: true)
    var b = try f.read(at: offset, count: 1)
    b[0] ^= 1 << bit
    try f.write(at: offset, b)
}

/// Compares `count` random reads (offset and length) against `expected`.
func checkRandomReads(_ r: some BlockSource, _ expected: [UInt8], count: Int, seed: UInt64) throws -> Bool {
    var rng = TestRNG(seed)
    for _ in 0..<count {
        guard !expected.isEmpty else { return r.size == 0 }
        let off = Int(rng.below(UInt64(expected.count)))
        let len = Int(rng.below(UInt64(min(300_000, expected.count - off)))) + 1
        let got = try r.read(at: UInt64(off), count: min(len, expected.count - off))
        if got != Array(expected[off..<off + got.count]) { return false }
    }
    return true
}
