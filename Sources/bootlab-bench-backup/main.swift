import BackupImage
import BlockCore
import Dispatch
import Foundation
import Processes

// Backup-image benchmarks (issue 3), each printed as a ratio against a named baseline measured on
// the same data in the same run. Usage: bootlab-bench-backup [SIZE] [DIR]   (default 1G, $TMPDIR)
// Also: `make DIR SIZE` (a seeded source and its images) and `read IMAGE ...` (the read loop
// alone, for perf and ci/bench-callgrind), both described where they are handled below.

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

func time(_ body: () throws -> Void) rethrows -> Double {
    let t = now()
    try body()
    return now() - t
}

/// Runs a baseline tool (argv, no shell); its output is ours unless `stdout` says otherwise. A
/// failing baseline stops the benchmark: a ratio against a failed run means nothing.
func tool(_ argv: [String], stdout: Command.Output = .inherit) throws {
    try Command(argv, stdout: stdout, stderr: .inherit).run()
}

let args = CommandLine.arguments

/// Sequential `read(at:into:)` of the whole image in `chunk`-byte requests: the loop every
/// front-end runs, and the one ci/bench-callgrind counts instructions of (`--toggle-collect`
/// names this function, so opening the image is not counted).
@inline(never) func sequentialReadLoop(_ r: BackupImageReader, chunk: Int, into buf: UnsafeMutableRawBufferPointer) throws {
    var off: UInt64 = 0
    while off < r.size {
        let n = Int(min(UInt64(chunk), r.size - off))
        try r.read(at: off, into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<n]))
        off += UInt64(n)
    }
}

/// The benchmark's source: half random, half zero, interleaved in 8 MiB runs (so both paths of
/// every block matter). `seed` makes it reproducible (the instruction counts need the same data).
func writeSource(_ path: String, size: UInt64, seed: UInt64?) throws {
    let f = try RawFile.create(path: path, size: size)
    var system = SystemRandomNumberGenerator()
    var state = seed ?? 0
    func next() -> UInt64 {
        guard seed != nil else { return system.next() }
        state &+= 0x9E37_79B9_7F4A_7C15  // SplitMix64
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    var chunk = [UInt8](repeating: 0, count: 8 << 20)
    var off: UInt64 = 0
    var k = 0
    while off < size {
        let n = Int(min(UInt64(chunk.count), size - off))
        if k % 2 == 0 {
            chunk.withUnsafeMutableBytes { b in
                for i in stride(from: 0, to: n - 7, by: 8) { b.storeBytes(of: next(), toByteOffset: i, as: UInt64.self) }
            }
            try f.write(at: off, Array(chunk[0..<n]))
        }
        off += UInt64(n)
        k += 1
    }
    try f.flush()
}

let benchPassphrase = PassphraseSource.bytes(Array("benchmark".utf8))

func createImage(source: String, _ out: String, encrypt: Bool, scrypt: ScryptParameters = .default) throws {
    var o = BackupCreateOptions()
    o.compressionLevel = 3
    o.encrypt = encrypt
    o.passphrase = benchPassphrase
    o.scrypt = scrypt
    o.imageID = BackupCreateOptions.imageID(seed: out.split(separator: "/").last.map(String.init) ?? out)
    _ = try BackupImageWriter.create(sourcePath: source, outputPath: out, options: o)
}

// `bootlab-bench-backup make DIR SIZE`: a reproducible source (seeded) and its plain.bli and
// enc.bli (cheap scrypt: the key derivation is not what is measured) for `read` runs.
if args.count > 3, args[1] == "make" {
    let d = args[2]
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    try writeSource(d + "/source.raw", size: UInt64(try ByteSize.parse(args[3])), seed: 18)
    for (name, enc) in [("plain.bli", false), ("enc.bli", true)] {
        unlink(d + "/" + name)
        try createImage(source: d + "/source.raw", d + "/" + name, encrypt: enc, scrypt: .testing)
    }
    exit(0)
}

// `bootlab-bench-backup read IMAGE [THREADS] [CHUNK] [PASSES] [READ_AHEAD_BLOCKS]`: only the
// sequential read() loop over an existing image (for perf and callgrind); seconds per pass.
if args.count > 2, args[1] == "read" {
    var o = BackupImageReader.Options()
    if args.count > 3, let t = Int(args[3]) { o.decodeThreads = t }
    let chunk = args.count > 4 ? Int(try ByteSize.parse(args[4])) : 4 << 20
    let passes = args.count > 5 ? Int(args[5]) ?? 1 : 1
    if args.count > 6, let ra = Int(args[6]) { o.readAheadBlocks = ra }
    let r = try BackupImageReader.open(path: args[2], passphrase: benchPassphrase, options: o)
    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
    defer { buf.deallocate() }
    for _ in 0..<passes {
        let t = try time { try sequentialReadLoop(r, chunk: chunk, into: buf) }
        print(String(format: "read %@: %.3f s", args[2], t))
    }
    exit(0)
}
let size = args.count > 1 ? try ByteSize.parse(args[1]) : 1 << 30
let dir = (args.count > 2 ? args[2] : (ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp")) + "/bootlab-bench-backup-\(getpid())"
try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
// BENCH_KEEP=1 keeps the images (source.raw, plain.bli, enc.bli) for `read` runs afterwards.
defer { if ProcessInfo.processInfo.environment["BENCH_KEEP"] != "1" { try? FileManager.default.removeItem(atPath: dir) } }
let src = dir + "/source.raw"
let level: Int32 = 3

try writeSource(src, size: UInt64(size), seed: nil)
print("source: \(ByteSize.format(size)) (half random, half zero), zstd level \(level), \(ProcessInfo.processInfo.activeProcessorCount) cores")

func create(_ out: String, encrypt: Bool) throws -> Double {
    try time { try createImage(source: src, out, encrypt: encrypt) }
}

// Creation vs zstd -T0.
let zstdC = try time { try tool(["zstd", "-q", "-\(level)", "-T0", "-f", "-o", "\(dir)/source.zst", src]) }
let plainC = try create(dir + "/plain.bli", encrypt: false)
let encC = try create(dir + "/enc.bli", encrypt: true)
print(String(format: "create plain:      %.2fs vs zstd -T0 %.2fs  ratio %.2fx (higher is better; baseline/ours)", plainC, zstdC, zstdC / plainC))
print(String(format: "create encrypted:  %.2fs  (encryption overhead %.2fx of plain)", encC, encC / plainC))

// Restore, three ways, each against zstd on the same data, alternating runs, medians.
// - decode: every stored block decoded and verified (the restore path, no sink) vs
//   `zstd -dc > /dev/null` (both discard the output);
// - file: `BackupRestore.restore` to a new file, fsync included, vs `zstd -d -o FILE` plus
//   `sync FILE` on the same file system (both write sparse files: zstd's default for -o);
// - read(): sequential 4 MiB `read(at:into:)` through the block-source API (cache, read-ahead)
//   vs `zstd -dc > /dev/null`: what a front-end streaming the disk sees.
let runs = max(1, Int(ProcessInfo.processInfo.environment["BENCH_RUNS"] ?? "") ?? 3)
func loadAverage() -> String {
    ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?").split(separator: " ").prefix(3).joined(separator: " ")
}
func median(_ xs: [Double]) -> Double { let s = xs.sorted(); return s[s.count / 2] }
let pass = benchPassphrase
func decodeAll(_ path: String) throws -> Double {
    let r = try BackupImageReader.open(path: path, passphrase: pass)
    return try time { try r.forEachStoredBlock { _, _ in } }
}
func restoreFile(_ path: String) throws -> Double {
    let r = try BackupImageReader.open(path: path, passphrase: pass)
    let out = dir + "/restored.raw"
    unlink(out)
    let t = try time { try BackupRestore.restore(r, to: out) }
    unlink(out)
    return t
}
/// Sequential 4 MiB reads. `oneThread`: every block decoded on the calling thread (one decode
/// worker, no read-ahead, which would decode on other threads): the row to set beside
/// single-threaded `zstd -dc`.
func readAll(_ path: String, oneThread: Bool = false) throws -> Double {
    var o = BackupImageReader.Options()
    if oneThread { o.decodeThreads = 1; o.readAheadBlocks = 0 }
    let r = try BackupImageReader.open(path: path, passphrase: pass, options: o)
    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
    defer { buf.deallocate() }
    return try time { try sequentialReadLoop(r, chunk: buf.count, into: buf) }
}
func zstdToFile() throws -> Double {
    let out = dir + "/zstd-restored.raw"
    let t = try time { try tool(["zstd", "-q", "-d", "-f", "\(dir)/source.zst", "-o", out]); try tool(["sync", out]) }
    unlink(out)
    return t
}
var zNull: [Double] = [], zFile: [Double] = []
var decP: [Double] = [], decE: [Double] = [], fileP: [Double] = [], fileE: [Double] = [], readP: [Double] = [], readE: [Double] = []
var readP1: [Double] = [], readE1: [Double] = []
for _ in 0..<runs {
    zNull.append(try time { try tool(["zstd", "-q", "-dc", "\(dir)/source.zst"], stdout: .null) })
    decP.append(try decodeAll(dir + "/plain.bli"))
    decE.append(try decodeAll(dir + "/enc.bli"))
    zFile.append(try zstdToFile())
    fileP.append(try restoreFile(dir + "/plain.bli"))
    fileE.append(try restoreFile(dir + "/enc.bli"))
    readP.append(try readAll(dir + "/plain.bli"))
    readE.append(try readAll(dir + "/enc.bli"))
    readP1.append(try readAll(dir + "/plain.bli", oneThread: true))
    readE1.append(try readAll(dir + "/enc.bli", oneThread: true))
}
let zn = median(zNull), zf = median(zFile)
/// One result row; with $BENCH_TABLE set (ci/bench-all) it is also appended there as
/// "name<TAB>ratio<TAB>goal<TAB>detail" for the table of every ratio.
func line(_ label: String, _ xs: [Double], _ base: Double, _ baseName: String, goal: String) {
    let t = median(xs)
    func f(_ x: Double) -> String { String(format: "%.2f", x) }
    print("\(label) \(f(t))s vs \(baseName) \(f(base))s  ratio \(f(base / t))x (goal \(goal); baseline/ours)")
    if let table = ProcessInfo.processInfo.environment["BENCH_TABLE"], let h = FileHandle(forWritingAtPath: table) {
        let name = label.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: ":"))
        h.seekToEndOfFile()
        h.write(Data("backup \(name) vs \(baseName)\t\(f(base / t))\t\(goal)\tours \(f(t)) s, baseline \(f(base)) s, median of \(xs.count), \(ByteSize.format(size))\n".utf8))
        h.closeFile()
    }
}
print("restore, median of \(runs) (ratios > 1: bootlab faster; zstd -dc is single-threaded, bootlab decodes on \(BackupImageReader.defaultDecodeThreads) threads unless the row says 1 thread; load \(loadAverage())):")
line("  decode+verify plain:     ", decP, zn, "zstd -dc >/dev/null", goal: "none")
line("  decode+verify encrypted: ", decE, zn, "zstd -dc >/dev/null", goal: "none")
line("  restore to file plain:   ", fileP, zf, "zstd -d -o F; sync F", goal: "none")
line("  restore to file encrypted:", fileE, zf, "zstd -d -o F; sync F", goal: "none")
line("  read() sequential plain: ", readP, zn, "zstd -dc >/dev/null", goal: ">= 0.8")
line("  read() sequential enc.:  ", readE, zn, "zstd -dc >/dev/null", goal: ">= 0.7")
line("  read() seq. plain 1 thread:", readP1, zn, "zstd -dc >/dev/null", goal: "none (one thread each)")
line("  read() seq. enc. 1 thread: ", readE1, zn, "zstd -dc >/dev/null", goal: "none (one thread each)")
print(String(format: "encrypted vs plain decode overhead: %.2fx", median(decE) / median(decP)))

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
