import BlockCore

/// The fuzz harness's view of an input: a VHDX file whose interesting bytes sit in fixed slots,
/// so a seed needs ~100 KB instead of the ≥ 3 MiB a real file spreads its structures over.
///
/// Slots, in input order: 4 KiB at 0, 0x10000, 0x20000, 0x30000, 0x40000 (identifier, headers,
/// region tables); then for every MiB k ≥ 1: 8 KiB at k MiB (log entries, BAT, metadata table,
/// block starts) and 4 KiB at k MiB + 64 KiB (metadata items). Everything else reads as zeros.
/// The source reaches 260 MiB past the last slot's MiB (it is sparse: zeros cost nothing).
public struct VHDXFuzzLayout {
    public static func slot(_ i: Int) -> (offset: UInt64, length: Int) {
        if i < 5 { return (UInt64(i) * 0x10000, 4096) }
        let j = i - 5, k = UInt64(j / 2 + 1)
        return j % 2 == 0 ? (k * VHDX.mib, 8192) : (k * VHDX.mib + 0x10000, 4096)
    }

    /// Builds the fuzz input for a real file: its slots, with the all-zero tail dropped.
    public static func pack(_ file: any BlockSource) throws -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while true {
            let (off, len) = slot(i)
            guard off < file.size else { break }
            out += try file.read(at: off, count: Int(min(UInt64(len), file.size - off)))
            if UInt64(len) > file.size - off { break }
            i += 1
        }
        while out.last == 0 { out.removeLast() }
        return out
    }

    /// The sparse source an input stands for.
    public static func unpack(_ input: [UInt8]) -> MemorySparseSource {
        var pieces: [(UInt64, [UInt8])] = []
        var pos = 0, i = 0
        while pos < input.count {
            let (off, len) = slot(i)
            let n = min(len, input.count - pos)
            pieces.append((off, Array(input[pos..<pos + n])))
            pos += n
            i += 1
        }
        let lastMiB = (pieces.last?.0 ?? 0) / VHDX.mib
        // Room for a full 256 MiB block after the last slot: block ends never fall off the source.
        return MemorySparseSource(size: (lastMiB + 260) * VHDX.mib, pieces: pieces)
    }
}

/// Zeros with a few byte ranges set: sorted, disjoint pieces.
public struct MemorySparseSource: BlockSource {
    public let size: UInt64
    let pieces: [(UInt64, [UInt8])]

    public init(size: UInt64, pieces: [(UInt64, [UInt8])]) {
        self.size = size
        self.pieces = pieces
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        let end = offset + UInt64(buffer.count)
        for (o, b) in pieces where o < end && offset < o + UInt64(b.count) {
            let a = max(o, offset), z = min(o + UInt64(b.count), end)
            b.withUnsafeBytes { src in
                (buffer.baseAddress! + Int(a - offset)).copyMemory(from: src.baseAddress! + Int(a - o), byteCount: Int(z - a))
            }
        }
    }
}

/// One fuzz input through the parser, the reader and `check`: any error is fine, a crash, hang
/// or runaway allocation is not. Lives in the library so regression tests run the same path.
public func fuzzVHDXOne(_ input: UnsafeRawBufferPointer) {
    let src = VHDXFuzzLayout.unpack(Array(input))
    if let f = try? VHDXFile(source: src) {
        let n = Int(min(f.size, 1 << 20))
        _ = try? f.read(at: 0, count: n)
        if f.size > 4096 { _ = try? f.read(at: f.size - 4096, count: 4096) }
        _ = try? f.extents(in: 0..<min(f.size, 64 << 20))
        _ = f.allocatedBytes
    }
    _ = try? VHDXCheck.run(source: src)
}
