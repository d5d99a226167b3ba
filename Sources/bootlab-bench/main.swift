// bootlab-bench: benchmarks that print a ratio against a named baseline on the same data in
// the same run. Not pass/fail. Usage: bootlab-bench [all|convert|read|crc] [--format F]… [--dir DIR] [--runs N]
// [--chunk BYTES] (convert and read run for every registered native format unless --format narrows
// them; --chunk sets read's request size, 8 MiB by default: small requests weigh the per-call cost
// of a view's lookups, as an NBD or FUSE client's do).
import BlockCore
import DiskFormats
import Processes
#if canImport(Glibc)
import Glibc
#endif

struct BenchError: Error, CustomStringConvertible { let description: String }

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Runs a program (stdout to /dev/null unless `stdoutPath`) and returns its wall time.
@discardableResult
func spawn(_ argv: [String], stdoutPath: String = "/dev/null") throws -> Double {
    let t0 = now()
    try Command(argv, stdout: .file(stdoutPath, append: false), stderr: .inherit).run()
    return now() - t0
}

func median(_ xs: [Double]) -> Double { let s = xs.sorted(); return s[s.count / 2] }
func fmt(_ x: Double, _ digits: Int = 3) -> String {
    let p = (0..<digits).reduce(1.0) { a, _ in a * 10 }
    return String((x * p).rounded() / p)
}

/// The benchmark disk: 1 GiB raw, 512 MiB of pseudo-random data in 64 MiB runs every other
/// 64 MiB, the rest a hole. Deterministic (SplitMix64), made once per directory.
func makeBenchDisk(_ path: String) throws {
    let size: UInt64 = 1 << 30
    if let f = try? RawFile(path: path), f.size == size { return }
    let f = try RawFile.create(path: path, size: size)
    var state: UInt64 = 0x426F_6F74_4C61_62
    let piece = 8 << 20
    var buf = [UInt64](repeating: 0, count: piece / 8)
    var off: UInt64 = 0
    while off < size {
        for i in 0..<buf.count {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            buf[i] = z ^ (z >> 31)
        }
        try buf.withUnsafeBytes { try f.write(at: off, from: $0) }
        off += UInt64(piece)
        if off % (128 << 20) == 64 << 20 { off += 64 << 20 }
    }
    try f.flush()
}

struct Bench {
    var dir: String
    var runs: Int
    var chunk: Int
    var bootlab: String
    var disk: String { dir + "/bench-1G.raw" }

    /// QEMU's name for a format (VHD is `vpc`).
    static func qemuName(_ f: String) -> String { f == "vhd" ? "vpc" : f }

    func convert(_ format: String) throws {
        try makeBenchDisk(disk)
        let ours = dir + "/ours.\(format)", theirs = dir + "/qemu.\(format)"
        let q = Self.qemuName(format)
        // Warm the page cache for both, then alternate runs.
        try spawn([bootlab, "convert", "-O", format, disk, ours])
        try spawn(["qemu-img", "convert", "-O", q, disk, theirs])
        var a: [Double] = [], b: [Double] = []
        for _ in 0..<runs {
            a.append(try spawn([bootlab, "convert", "-O", format, disk, ours]))
            b.append(try spawn(["qemu-img", "convert", "-O", q, disk, theirs]))
        }
        let ta = median(a), tb = median(b)
        print("convert 1 GiB raw (512 MiB random data) -> \(format), median of \(runs), warm cache")
        print("  bootlab convert -O \(format) : \(fmt(ta)) s")
        print("  qemu-img convert -O \(q)    : \(fmt(tb)) s   (baseline)")
        print("  ratio qemu-img/bootlab  : \(fmt(tb / ta, 2))x  (goal >= 1.0; >1 means bootlab is faster)")
    }

    func read(_ format: String) throws {
        try makeBenchDisk(disk)
        guard let driver = DiskFormatRegistry.driver(named: format) else { throw BenchError(description: "no driver for \(format)") }
        let source = try RawFile(path: disk)
        let view = try driver.view(of: source, options: NativeFormatOptions())
        let file = dir + "/ours.\(format)"
        if (try? RawFile(path: file))?.size != view.size {
            try SparseImageWriter.write(view, toPath: file, options: .init(deferredPrefix: driver.signatureLength))
        }
        try spawn(["cat", file])   // warm
        var a: [Double] = [], b: [Double] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        for _ in 0..<runs {
            let t0 = now()
            var off: UInt64 = 0
            while off < view.size {
                let n = Int(min(UInt64(chunk), view.size - off))
                try view.read(at: off, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
                off += UInt64(n)
            }
            a.append(now() - t0)
            b.append(try spawn(["cat", file]))
        }
        let gb = Double(view.size) / 1e9
        let ta = median(a), tb = median(b)
        print("sequential read of the synthesized \(format) (\(ByteSize.format(view.size))), \(ByteSize.format(UInt64(chunk))) reads, median of \(runs), warm cache")
        print("  \(type(of: view)).read (in process): \(fmt(ta)) s, \(fmt(gb / ta, 2)) GB/s")
        print("  cat converted file >/dev/null: \(fmt(tb)) s, \(fmt(gb / tb, 2)) GB/s   (baseline)")
        print("  ratio view/cat throughput    : \(fmt(tb / ta, 2))x  (goal >= 0.8)")
    }

    func crc() {
        let n = 256 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: n, alignment: 64)
        defer { buffer.deallocate() }
        for i in 0..<n { buffer[i] = UInt8(truncatingIfNeeded: i &* 131) }
        _ = CRC32C.checksum(UnsafeRawBufferPointer(buffer))   // warm
        // One incremental computation over every run (the buffer again each time), so each run
        // times the same Update path the field-zeroing checksums use, and the result is used.
        var c = CRC32C()
        var ts: [Double] = []
        for _ in 0..<max(runs, 3) {
            let t0 = now()
            c.update(UnsafeRawBufferPointer(buffer))
            ts.append(now() - t0)
        }
        let crc = c.finalize()
        let t = median(ts)
        print("CRC-32C (Crypto++) over 256 MiB: \(fmt(Double(n) / t / 1e9, 2)) GB/s (crc 0x\(String(crc, radix: 16)))")
    }
}

var args = Array(CommandLine.arguments.dropFirst())
var what = "all"
var dir = "/var/tmp/bootlab-bench"
var runs = 3
var chunk = 8 << 20
var formats: [String] = []
while !args.isEmpty {
    let a = args.removeFirst()
    switch a {
    case "--dir": dir = args.isEmpty ? dir : args.removeFirst()
    case "--runs": runs = Int(args.isEmpty ? "" : args.removeFirst()) ?? runs
    case "--format": if !args.isEmpty { formats.append(args.removeFirst()) }
    case "--chunk": chunk = Int(args.isEmpty ? "" : args.removeFirst()) ?? chunk
    case "all", "convert", "read", "crc": what = a
    default:
        print("usage: bootlab-bench [all|convert|read|crc] [--format F]… [--dir DIR] [--runs N] [--chunk BYTES]")
        exit(2)
    }
}
let exe = CommandLine.arguments[0]
let binDir = exe.contains("/") ? String(exe[..<exe.lastIndex(of: "/")!]) : "."
let bench = Bench(dir: dir, runs: max(1, runs), chunk: max(512, chunk), bootlab: binDir + "/bootlab")
do {
    mkdir(dir, 0o755)
    guard access(bench.bootlab, X_OK) == 0 else { throw BenchError(description: "\(bench.bootlab) not found: swift build -c release first") }
    if what == "all" || what == "crc" { bench.crc() }
    for f in formats.isEmpty ? DiskFormatRegistry.names : formats {
        if what == "all" || what == "convert" { try bench.convert(f) }
        if what == "all" || what == "read" { try bench.read(f) }
    }
} catch {
    writeStandardError("bootlab-bench: \(error)\n")
    exit(1)
}
