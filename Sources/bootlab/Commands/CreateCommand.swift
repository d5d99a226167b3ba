import ArgumentParser
import Foundation
import BlockCore
import DiskFormats

/// `bootlab create -f vhdx [-b PARENT] [-o block_size=32M,logical_sector_size=4096,...] FILE [SIZE]`.
struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create an empty disk image in any native format, or a differencing VHDX (qemu-img create style).")

    @Option(name: .short, help: "Format: \(DiskFormatRegistry.names.joined(separator: ", ")).") var format = "vhdx"
    @Option(name: .short, help: "Parent (backing) file: creates a differencing disk. A relative path is relative to FILE's directory, as with qemu-img.") var backing: String?
    @Option(name: .short, help: "Options: block_size, logical_sector_size, physical_sector_size, seed.") var options: [String] = []
    @Argument(help: "The new file.") var file: String
    @Argument(help: "Virtual size (K/M/G/T suffixes); not with -b.") var size: String?

    func run() throws {
        do {
            guard let driver = DiskFormatRegistry.driver(named: format) else {
                throw ValidationError("-f \(format): not a format create knows (\(DiskFormatRegistry.names.joined(separator: ", ")))")
            }
            var opts: [String: String] = [:]
            for o in options.flatMap({ $0.split(separator: ",") }) {
                let kv = o.split(separator: "=", maxSplits: 1).map(String.init)
                guard kv.count == 2 else { throw ValidationError("option '\(o)' is not key=value") }
                opts[kv[0]] = kv[1]
            }
            guard driver.name == "vhdx" else { return try createNative(driver, opts) }
            let known: Set = ["block_size", "logical_sector_size", "physical_sector_size", "seed"]
            if let bad = opts.keys.first(where: { !known.contains($0) }) { throw ValidationError("unknown option '\(bad)'") }
            let seed = Array((opts["seed"] ?? "").utf8)
            if let parent = backing {
                guard size == nil, opts["block_size"] == nil else { throw ValidationError("a differencing disk takes its size and block size from the parent") }
                let dir = (file as NSString).deletingLastPathComponent
                let resolved = parent.hasPrefix("/") || dir.isEmpty ? parent : dir + "/" + parent
                _ = try VHDXFile.createDifferencing(path: file, parentPath: resolved, seed: seed)
            } else {
                guard let size else { throw ValidationError("SIZE is required without -b") }
                let v = try ByteSize.parse(size)
                func u32(_ key: String) throws -> UInt32? {
                    guard let t = opts[key] else { return nil }
                    guard let v = UInt32(exactly: try ByteSize.parse(t)) else { throw ValidationError("\(key) \(t) is too large") }
                    return v
                }
                let bs = try u32("block_size")
                let lss = try u32("logical_sector_size") ?? 512
                let pss = try u32("physical_sector_size") ?? 512
                _ = try VHDXFile.createDynamic(path: file, virtualSize: v, blockSize: bs, logicalSectorSize: lss,
                                               physicalSectorSize: pss, seed: seed)
            }
        } catch {
            writeStandardError("bootlab create: \(error)\n")
            throw ExitCode(1)
        }
    }

    /// Any other format: its driver's `create` with the common options; `seed` is any text
    /// (hashed), so the same command line makes the same file.
    private func createNative(_ driver: any DiskFormatDriver, _ opts: [String: String]) throws {
        guard backing == nil else { throw ValidationError("-b (differencing) is supported for -f vhdx only") }
        guard let size else { throw ValidationError("SIZE is required") }
        var o = NativeFormatOptions(subformat: opts["subformat"], keys: opts)
        if let s = opts["logical_sector_size"] {
            guard let v = UInt32(s) else { throw ValidationError("logical_sector_size \(s) is not a number") }
            o.logicalSectorSize = v
        }
        if let u = opts["block_size"] ?? opts["cluster_size"] ?? opts["grain_size"] { o.allocationUnit = try ByteSize.parse(u) }
        o.seed = Array(SHA256.hash(Array("bootlab create \(driver.name) ".utf8) + Array((opts["seed"] ?? "").utf8)).prefix(16))
        try driver.create(path: file, virtualSize: try ByteSize.parse(size), options: o)
    }
}
