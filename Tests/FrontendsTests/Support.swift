import Testing
import Foundation
import BlockCore
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

func isMounted(_ mountpoint: String) -> Bool {
    let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
    return mounts.split(separator: "\n").contains { $0.split(separator: " ").dropFirst().first.map(String.init) == mountpoint }
}

func unmount(_ mountpoint: String) {
    if isMounted(mountpoint) { _ = try? run("fusermount3", ["-u", "-z", mountpoint], timeout: 10) }
}

func sha256(ofFile path: String) throws -> String {
    try SHA256.hash(RawFile(path: path)).hex
}

struct StatsDoc: Decodable { var sources: [SourceStatistics] }

func readStats(_ path: String) -> StatsDoc? {
    guard let d = FileManager.default.contents(atPath: path) else { return nil }
    return try? JSONDecoder().decode(StatsDoc.self, from: d)
}

/// Writes a test disk: random data, a hole, and an odd tail (size not a multiple of 4 KiB).
func makeDisk(_ path: String, seed: UInt64, dataBytes: Int = 3 << 20, size: UInt64 = (8 << 20) + 1536) throws -> [UInt8] {
    var rng = Bytes(seed: seed)
    let f = try RawFile.create(path: path, size: size)
    let data = rng.bytes(dataBytes)
    try f.write(at: 0, data)
    let tail = rng.bytes(1000)
    try f.write(at: size - 1000, tail)
    return try f.read(at: 0, count: Int(size))
}

/// First offset where two byte arrays differ (or the shorter length), nil when equal. Tests compare
/// large buffers through this: an `#expect(a == b)` failure on megabytes makes Swift Testing diff
/// the arrays, which takes minutes.
func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int? {
    if a == b { return nil }
    for i in 0..<min(a.count, b.count) where a[i] != b[i] { return i }
    return min(a.count, b.count)
}
