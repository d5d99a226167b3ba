import BlockCore
import Foundation
import TestSupport
import Processes
@testable import DiskFormats

/// Runs a tool; returns (status, stdout+stderr).
@discardableResult
func sh(_ args: [String]) throws -> (status: Int32, output: String) {
    let r = try Command(args, stderr: .stdout).run(check: false)
    return (r.termination.status, r.stdoutText)
}

struct ToolFailed: Error, CustomStringConvertible {
    let description: String
}

/// Runs a tool that must succeed.
@discardableResult
func run(_ args: String...) throws -> String {
    let r = try sh(args)
    guard r.status == 0 else { throw ToolFailed(description: "\(args.joined(separator: " ")) -> \(r.status): \(r.output)") }
    return r.output
}

func readAll(_ s: any BlockSource) throws -> [UInt8] { try s.read(at: 0, count: Int(s.size)) }

func fileBytes(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

/// Deterministic pseudo-random bytes (xorshift) for test data.
func pattern(_ n: Int, seed: UInt64) -> [UInt8] {
    var x = seed | 1
    var out = [UInt8](repeating: 0, count: n)
    for i in 0..<n {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17
        out[i] = UInt8(truncatingIfNeeded: x)
    }
    return out
}

func sha(_ path: String) throws -> String { SHA256.hash(try fileBytes(path)).hex }

/// Mounts a VHDX with libvhdi's vhdimount (FUSE) and returns the exposed raw image's bytes.
func readWithVhdimount(_ image: String, in dir: Scratch) throws -> [UInt8] {
    let mnt = dir.file("mnt-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
    try run("vhdimount", image, mnt)
    defer { unmountFUSE(mnt) }
    // vhdimount exposes every file of a differencing chain, parent first: vhdi1 … vhdiN; the
    // image asked for is the last one.
    let names = try FileManager.default.contentsOfDirectory(atPath: mnt).filter { $0.hasPrefix("vhdi") }
    let last = names.max { (Int($0.dropFirst(4)) ?? 0) < (Int($1.dropFirst(4)) ?? 0) }
    return try fileBytes(mnt + "/" + (last ?? "vhdi1"))
}

/// Rewrites the metadata region of a VHDX in place (tests re-point or corrupt files with it).
func rewriteMetadata(_ path: String, _ change: (inout VHDXMetadata) -> Void) throws {
    let f = try RawFile(path: path, writable: true)
    let rt = try VHDXRegionTable.parse(try f.read(at: VHDX.regionTable1Offset, count: VHDX.regionTableSize),
                                       at: VHDX.regionTable1Offset, name: "region table 1")
    let r = rt.entry(VHDX.metadataRegion)!
    let mt = try VHDXMetadataTable.parse(try f.read(at: r.fileOffset, count: 0x10000), at: r.fileOffset, regionLength: UInt64(r.length))
    var md = try VHDXMetadata.parse(table: mt, regionOffset: r.fileOffset) { try f.read(at: $0, count: $1) }
    change(&md)
    try f.write(at: r.fileOffset, md.serialize(regionLength: Int(r.length)))
    try f.flush()
}
