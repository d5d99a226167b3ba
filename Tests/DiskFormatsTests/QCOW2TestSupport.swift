import BlockCore
import Foundation
import Processes
import TestSupport
import Testing
@testable import DiskFormats

/// Helpers of the qcow2 tests, in one namespace so they never collide with other formats' tests.
enum Q2 {
    static let MiB: UInt64 = 1 << 20

    /// Runs a tool; (status, stdout, stderr).
    @discardableResult
    static func tool(_ args: [String], timeout: Double = 120) throws -> (status: Int32, out: String, err: String) {
        let r = try Command(args).run(timeout: timeout, check: false)
        return (r.termination.status, r.stdoutText, r.stderrText)
    }

    /// Runs a tool that must succeed; its stdout.
    @discardableResult
    static func must(_ args: String...) throws -> String {
        let r = try tool(args)
        guard r.status == 0 else { throw Failed(description: "\(args.joined(separator: " ")) -> \(r.status): \(r.out)\(r.err)") }
        return r.out
    }

    struct Failed: Error, CustomStringConvertible { let description: String }

    static func bytes(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

    /// Deterministic pseudo-random bytes (xorshift64).
    static func pattern(_ n: Int, seed: UInt64) -> [UInt8] {
        var x = seed | 1
        var out = [UInt8](repeating: 0, count: n)
        for i in 0..<n { x ^= x << 13; x ^= x >> 7; x ^= x << 17; out[i] = UInt8(truncatingIfNeeded: x) }
        return out
    }

    /// A sparse raw file of `size` bytes with `writes` (offset, length, seed) of pattern data.
    @discardableResult
    static func rawFile(_ path: String, size: UInt64, writes: [(UInt64, Int, UInt64)]) throws -> RawFile {
        let f = try RawFile.create(path: path, size: size)
        for (off, len, seed) in writes { try f.write(at: off, pattern(len, seed: seed)) }
        try f.flush()
        return try RawFile(path: path)
    }

    /// Our view of `source` written as a file (the driver's convert: the view copied sparse).
    static func writeView(_ source: any BlockSource, to path: String, options: NativeFormatOptions = NativeFormatOptions()) throws {
        _ = try QCOW2Driver().convert(source, toPath: path, options: options, writer: SparseImageWriter.Options(threads: 1, sync: false))
    }

    /// `qemu-img check` output and status (0 clean, 2 corrupt, 3 leaks).
    static func qemuCheck(_ path: String) throws -> (status: Int32, text: String) {
        let r = try tool(["qemu-img", "check", "-f", "qcow2", path])
        return (r.status, r.out + r.err)
    }

    /// The bytes libqcow's qcowmount (FUSE) exposes for `image`.
    static func qcowmountBytes(_ image: String, in dir: Scratch) throws -> [UInt8] {
        let mnt = dir.dir("qcowmnt-\(UInt32.random(in: 0...UInt32.max))")
        let log = dir.file("qcowmount.log")
        let r = try Command(["qcowmount", image, mnt], stdout: .file(log, append: false), stderr: .stdout).run(timeout: 60, check: false)
        guard r.termination.status == 0 else {
            throw Failed(description: "qcowmount failed: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
        defer { unmountFUSE(mnt) }
        return try bytes(mnt + "/qcow1")
    }

    /// A disk of `size` bytes whose `dataRanges` hold a position-derived pattern and the rest is absent.
    struct Sparse: BlockSource {
        let size: UInt64
        let dataRanges: [Range<UInt64>]

        static func byte(at o: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: (o &* 0x9E37_79B1) >> 13) | 1 }

        func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
            try checkRange(offset, buffer.count)
            for i in 0..<buffer.count {
                let o = offset + UInt64(i)
                buffer[i] = dataRanges.contains { $0.contains(o) } ? Sparse.byte(at: o) : 0
            }
        }

        func extents(in range: Range<UInt64>) throws -> [Extent] {
            let r = range.clamped(to: 0..<size)
            var out: [Extent] = []
            var pos = r.lowerBound
            for d in dataRanges {
                let c = d.clamped(to: pos..<r.upperBound)
                guard !c.isEmpty else { continue }
                if c.lowerBound > pos { out.append(Extent(offset: pos, length: c.lowerBound - pos, kind: .absent)) }
                out.append(Extent(offset: c.lowerBound, length: UInt64(c.count), kind: .data))
                pos = c.upperBound
            }
            if pos < r.upperBound { out.append(Extent(offset: pos, length: r.upperBound - pos, kind: .absent)) }
            return coalesce(out)
        }
    }

    /// Flips bits of `mask` in the byte at `offset` of the file.
    static func flip(_ path: String, at offset: UInt64, mask: UInt8 = 0xFF) throws {
        let f = try RawFile(path: path, writable: true)
        var b = try f.read(at: offset, count: 1)
        b[0] ^= mask
        try f.write(at: offset, b)
        try f.flush()
    }

    /// Overwrites 8 bytes with a big-endian u64.
    static func poke64(_ path: String, at offset: UInt64, _ v: UInt64) throws {
        let f = try RawFile(path: path, writable: true)
        var b = [UInt8](repeating: 0, count: 8)
        QCOW2BE.put64(&b, v, at: 0)
        try f.write(at: offset, b)
        try f.flush()
    }

    static func peek64(_ path: String, at offset: UInt64) throws -> UInt64 {
        QCOW2BE.u64(try RawFile(path: path).read(at: offset, count: 8), 0)
    }
}
