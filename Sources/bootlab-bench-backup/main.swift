import BackupImage
import BlockCore
import Dispatch
import Foundation

// Backup-image benchmarks (issue 3), each printed as a ratio against a named baseline measured on
// the same data in the same run. Usage: bootlab-bench-backup [SIZE] [DIR]   (default 1G, $TMPDIR)

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

func time(_ body: () throws -> Void) rethrows -> Double {
    let t = now()
    try body()
    return now() - t
}

@discardableResult
func sh(_ command: String) throws -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sh")
    p.arguments = ["-c", command]
    try p.run()
    p.waitUntilExit()
    return p.terminationStatus
}

let args = CommandLine.arguments
let size = args.count > 1 ? try ByteSize.parse(args[1]) : 1 << 30
let dir = (args.count > 2 ? args[2] : (ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp")) + "/bootlab-bench-backup-\(getpid())"
try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: dir) }
let src = dir + "/source.raw"
let level: Int32 = 3

// Half random, half zero, interleaved in 8 MiB runs (so both paths of every block matter).
do {
    let f = try RawFile.create(path: src, size: size)
    var rng = SystemRandomNumberGenerator()
    var chunk = [UInt8](repeating: 0, count: 8 << 20)
    var off: UInt64 = 0
    var k = 0
    while off < size {
        let n = Int(min(UInt64(chunk.count), size - off))
        if k % 2 == 0 {
            chunk.withUnsafeMutableBytes { b in
                for i in stride(from: 0, to: n - 7, by: 8) { b.storeBytes(of: rng.next() as UInt64, toByteOffset: i, as: UInt64.self) }
            }
            try f.write(at: off, Array(chunk[0..<n]))
        }
        off += UInt64(n)
        k += 1
    }
    try f.flush()
}
print("source: \(ByteSize.format(size)) (half random, half zero), zstd level \(level), \(ProcessInfo.processInfo.activeProcessorCount) cores")

func create(_ out: String, encrypt: Bool) throws -> Double {
    var o = BackupCreateOptions()
    o.compressionLevel = level
    o.encrypt = encrypt
    o.passphrase = .bytes(Array("benchmark".utf8))
    o.imageID = BackupCreateOptions.imageID(seed: out)
    return try time { _ = try BackupImageWriter.create(sourcePath: src, outputPath: out, options: o) }
}

// Creation vs zstd -T0.
let zstdC = try time { try sh("zstd -q -\(level) -T0 -f -o \(dir)/source.zst \(src)") }
let plainC = try create(dir + "/plain.bli", encrypt: false)
let encC = try create(dir + "/enc.bli", encrypt: true)
print(String(format: "create plain:      %.2fs vs zstd -T0 %.2fs  ratio %.2fx (higher is better; baseline/ours)", plainC, zstdC, zstdC / plainC))
print(String(format: "create encrypted:  %.2fs  (encryption overhead %.2fx of plain)", encC, encC / plainC))

// Sequential restore (read every byte through the reader, verify, discard) vs zstd -dc.
func restoreAll(_ path: String) throws -> Double {
    let r = try BackupImageReader.open(path: path, passphrase: .bytes(Array("benchmark".utf8)))
    var buf = [UInt8](repeating: 0, count: 4 << 20)
    return try time {
        var off: UInt64 = 0
        while off < r.size {
            let n = Int(min(UInt64(buf.count), r.size - off))
            try buf.withUnsafeMutableBytes { try r.read(at: off, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n])) }
            off += UInt64(n)
        }
    }
}
let zstdD = try time { try sh("zstd -q -dc \(dir)/source.zst > /dev/null") }
let plainD = try restoreAll(dir + "/plain.bli")
let encD = try restoreAll(dir + "/enc.bli")
print(String(format: "restore plain:     %.2fs vs zstd -dc %.2fs  ratio %.2fx (goal >= 0.8)", plainD, zstdD, zstdD / plainD))
print(String(format: "restore encrypted: %.2fs vs zstd -dc %.2fs  ratio %.2fx (goal >= 0.8; decrypts and verifies)", encD, zstdD, zstdD / encD))
print(String(format: "encrypted vs plain restore overhead: %.2fx", encD / plainD))

// Random 4 KiB reads: cold (fresh reader, every read a different block) and warm (cached).
func latencies(_ r: BackupImageReader, count: Int, seed: UInt64) throws -> [Double] {
    var state = seed
    var out: [Double] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    for _ in 0..<count {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        let off = (state >> 11) % (r.size / 4096) * 4096
        out.append(try time { try buf.withUnsafeMutableBytes { try r.read(at: off, into: $0) } })
    }
    return out.sorted()
}
func pct(_ xs: [Double], _ p: Double) -> Double { xs[min(xs.count - 1, Int(Double(xs.count) * p))] * 1e6 }
var ro = BackupImageReader.Options()
ro.readAheadBlocks = 0
ro.cacheBytes = 1 << 30
let cold = try BackupImageReader.open(path: dir + "/enc.bli", passphrase: .bytes(Array("benchmark".utf8)), options: ro)
let c = try latencies(cold, count: 2000, seed: 1)
let w = try latencies(cold, count: 2000, seed: 1)
let rawFile = try RawFile(path: src)
var rawBuf = [UInt8](repeating: 0, count: 4096)
var rawLat: [Double] = []
var st: UInt64 = 1
for _ in 0..<2000 {
    st = st &* 6364136223846793005 &+ 1442695040888963407
    let off = (st >> 11) % (size / 4096) * 4096
    rawLat.append(try time { try rawBuf.withUnsafeMutableBytes { try rawFile.read(at: off, into: $0) } })
}
rawLat.sort()
print(String(format: "random 4K (encrypted) cold p50 %.0fus p99 %.0fus; warm p50 %.1fus p99 %.1fus; raw pread p50 %.1fus p99 %.1fus (warm/raw p50 %.2fx)",
             pct(c, 0.5), pct(c, 0.99), pct(w, 0.5), pct(w, 0.99), pct(rawLat, 0.5), pct(rawLat, 0.99), pct(w, 0.5) / pct(rawLat, 0.5)))
