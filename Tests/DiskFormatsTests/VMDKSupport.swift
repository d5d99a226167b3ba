import BlockCore
import Foundation
import TestSupport
@testable import DiskFormats

/// Shared by the VMDK tests: sparse raw disks with data at chosen places, conversion through the
/// driver, and a few readers.
enum VMDKT {
    static let KiB: UInt64 = 1024
    static let MiB: UInt64 = 1 << 20

    /// A sparse raw file of `size` bytes with deterministic bytes at `ranges` (clamped).
    @discardableResult
    static func raw(_ path: String, size: UInt64, ranges: [Range<UInt64>], seed: UInt64 = 1) throws -> RawFile {
        let f = try RawFile.create(path: path, size: size)
        var b = Bytes(seed: seed)
        for r in ranges {
            let lo = min(r.lowerBound, size), hi = min(r.upperBound, size)
            if lo < hi { try f.write(at: lo, b.bytes(Int(hi - lo))) }
        }
        return try RawFile(path: path)
    }

    /// Data at the start, around every grain and grain-table boundary up to `size`, and at the end.
    static func boundaryRanges(size: UInt64) -> [Range<UInt64>] {
        var out: [Range<UInt64>] = [0..<min(size, 4096)]
        for b in [64 * KiB, 32 * MiB] where b < size {
            out.append(b - 512..<min(size, b + 512))
        }
        if size > 8192 { out.append(size - 1024..<size) }
        return out
    }

    static func convert(_ source: any BlockSource, _ path: String, subformat: String? = nil, keys: [String: String] = [:],
                        seed: [UInt8] = Array(repeating: 7, count: 16), grain: UInt64? = nil) throws {
        let o = NativeFormatOptions(subformat: subformat, allocationUnit: grain, seed: seed, keys: keys)
        _ = try VMDKDriver().convert(source, toPath: path, options: o, writer: SparseImageWriter.Options(threads: 1, sync: false))
    }

    static func bytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

    static func write(_ path: String, _ bytes: [UInt8]) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

    /// Every byte of `a` equals `b` (both read whole; test disks are small).
    static func same(_ a: any BlockSource, _ b: any BlockSource) throws -> Bool {
        guard a.size == b.size else { return false }
        var off: UInt64 = 0
        while off < a.size {
            let n = Int(min(4 * MiB, a.size - off))
            if try a.read(at: off, count: n) != b.read(at: off, count: n) { return false }
            off += UInt64(n)
        }
        return true
    }
}
