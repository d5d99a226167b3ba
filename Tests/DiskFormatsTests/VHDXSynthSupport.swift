import BlockCore
import Foundation
import TestSupport
import Processes
import Testing
@testable import DiskFormats

/// Deterministic pseudo-random bytes (SplitMix64): test data without an RNG.
struct SynthRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func next(below n: UInt64) -> UInt64 { next() % n }
    mutating func bytes(_ n: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        var i = 0
        while i < n {
            var w = next()
            for _ in 0..<8 where i < n { out[i] = UInt8(truncatingIfNeeded: w); w >>= 8; i += 1 }
        }
        return out
    }
}

struct ToolResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a real tool (qemu-img, vhdiinfo, …) and captures its output.
func runTool(_ argv: [String]) throws -> ToolResult {
    let r = try Command(argv).run(check: false)
    return ToolResult(status: r.termination.status, stdout: r.stdoutText, stderr: r.stderrText)
}

/// Runs a tool that daemonizes (vhdimount) until its first process exits; its output (both
/// streams) is kept in `logPath` for the failure message and for a look afterwards.
func runDaemonizingTool(_ argv: [String], logPath: String) throws -> ToolResult {
    let r = try Command(argv, stdout: .file(logPath, append: false), stderr: .stdout).run(check: false)
    let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    return ToolResult(status: r.termination.status, stdout: text, stderr: text)
}

func toolExists(_ name: String) -> Bool {
    ["/usr/bin/", "/usr/sbin/", "/bin/", "/usr/local/bin/"].contains { FileManager.default.isExecutableFile(atPath: $0 + name) }
}

/// What a test source disk holds.
enum SynthPattern: String, Sendable, CustomStringConvertible {
    case empty
    case denseRandom
    case sparseRandom
    /// A sector on each side of every block boundary, plus the first and last sector.
    case blockBoundaries
    /// Sparse random plus the block boundaries around every chunk boundary (BAT interleave).
    case chunkBoundaries

    var description: String { rawValue }
}

/// Writes a sparse raw file of `size` bytes holding `pattern`; returns the data ranges written.
@discardableResult
func makeSourceFile(_ path: String, size: UInt64, blockSize: UInt64, chunkRatio: UInt64, pattern: SynthPattern, seed: UInt64) throws -> [Range<UInt64>] {
    let f = try RawFile.create(path: path, size: size)
    var rng = SynthRandom(seed: seed)
    var ranges: [Range<UInt64>] = []
    func put(_ off: UInt64, _ len: UInt64) throws {
        let lo = min(off, size), hi = min(off + len, size)
        guard lo < hi else { return }
        try f.write(at: lo, rng.bytes(Int(hi - lo)))
        ranges.append(lo..<hi)
    }
    switch pattern {
    case .empty:
        break
    case .denseRandom:
        var off: UInt64 = 0
        while off < size { try put(off, min(4 << 20, size - off)); off += 4 << 20 }
    case .sparseRandom, .chunkBoundaries:
        for _ in 0..<6 {
            let len = 1 + rng.next(below: 300_000)
            try put(rng.next(below: size), len)
        }
        if pattern == .chunkBoundaries {
            let chunkBytes = chunkRatio * blockSize
            var c = chunkBytes
            while c < size {
                try put(c - blockSize - 512, 1024)   // last block of a chunk and the one before
                try put(c - 512, 1024)                // across the chunk boundary
                try put(c + blockSize - 512, 1024)    // second block of the next chunk
                c += chunkBytes
            }
            try put(size - 512, 512)
        }
    case .blockBoundaries:
        try put(0, 512)
        var b = blockSize
        while b < size { try put(b - 512, 1024); b += blockSize }
        try put(size - 512, 512)
    }
    return ranges
}

/// Compares `count` bytes of two sources at `offset`, in pieces.
func sameBytes(_ a: any BlockSource, _ aOffset: UInt64, _ b: any BlockSource, _ bOffset: UInt64, count: UInt64) throws -> Bool {
    var done: UInt64 = 0
    while done < count {
        let n = Int(min(4 << 20, count - done))
        if try a.read(at: aOffset + done, count: n) != b.read(at: bOffset + done, count: n) { return false }
        done += UInt64(n)
    }
    return true
}
