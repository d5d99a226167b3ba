import BackupImage
import BlockCore
import DiskFormats

// No passphrase: scrypt never runs on fuzzed cost parameters (a key check could not be forged
// anyway). Parses the input as a backup image (header, trailer, index; then decodes up to 8 blocks and
// asks for extents) and as a partition table. Anything but a typed error is a bug.
@_cdecl("LLVMFuzzerTestOneInput")
public func f(_ p: UnsafeRawPointer, _ n: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: p, count: n))
    let src = MemorySource(bytes)
    if let r = try? BackupImageReader.open(source: src, path: "/nonexistent/fuzz.bli", passphrase: nil) {
        _ = try? r.extents(in: 0..<r.size)
        var buf = [UInt8](repeating: 0, count: 4096)
        for i in 0..<min(r.blockCount, 8) {
            _ = try? buf.withUnsafeMutableBytes { try r.read(at: UInt64(i) * UInt64(r.blockSize), into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<min(4096, Int(r.size - UInt64(i) * UInt64(r.blockSize)))])) }
        }
        _ = r.verifyBlocks()
    }
    _ = try? PartitionTable.read(from: src)
    _ = try? MBR.parse(bytes)
    return 0
}
