import BlockCore

/// The fuzz harnesses' view of an input for formats whose structures sit far apart in small
/// files (VHD: footers at both ends; VDI: header, block map at 1 MiB, blocks): a sparse file
/// described by sector records, so a seed stays a few KB while the file it stands for is MiBs.
///
/// Input: u32 LE file size (taken modulo 32 MiB + 1: big enough for every seed, small enough
/// that a table bounded by the file size stays cheap), then records of u32 LE sector index,
/// u16 LE byte count (at most 4096) and that many bytes, laid at sector × 512. Bytes no record
/// covers read as zeros; a record past the file's end is dropped; a short last record keeps
/// the bytes it has.
public enum SectorRecordFuzzLayout {
    public static let maxFileSize: UInt64 = 32 << 20

    /// The records of a real file: its non-zero sectors in runs of at most 4096 bytes.
    public static func pack(_ file: any BlockSource) throws -> [UInt8] {
        precondition(file.size <= maxFileSize, "fuzz seeds are at most 32 MiB files")
        var out = [UInt8](repeating: 0, count: 4)
        out.putLE32(UInt32(file.size), at: 0)
        var sector: UInt64 = 0
        let sectors = (file.size + 511) / 512
        while sector < sectors {
            let n = Int(min(512, file.size - sector * 512))
            let bytes = try file.read(at: sector * 512, count: n)
            if bytes.allSatisfy({ $0 == 0 }) { sector += 1; continue }
            // A run of non-zero sectors, up to 8 of them.
            var run = bytes
            var next = sector + 1
            while next < sectors && run.count < 4096 {
                let m = Int(min(512, file.size - next * 512))
                let b = try file.read(at: next * 512, count: m)
                if b.allSatisfy({ $0 == 0 }) { break }
                run += b
                next += 1
            }
            while run.last == 0 { run.removeLast() }
            var rec = [UInt8](repeating: 0, count: 6)
            rec.putLE32(UInt32(sector), at: 0)
            rec.putLE16(UInt16(run.count), at: 4)
            out += rec + run
            sector = next
        }
        return out
    }

    /// The sparse source an input stands for.
    public static func unpack(_ input: [UInt8]) -> MemorySparseSource {
        guard input.count >= 4 else { return MemorySparseSource(size: UInt64(input.count), pieces: []) }
        let size = UInt64(input.le32(0)) % (maxFileSize + 1)
        var pieces: [(UInt64, [UInt8])] = []
        var pos = 4
        while pos + 6 <= input.count {
            let at = UInt64(input.le32(pos)) * 512
            let n = min(Int(min(input.le16(pos + 4), 4096)), input.count - pos - 6)
            let bytes = Array(input[pos + 6..<pos + 6 + n])
            pos += 6 + n
            guard at < size else { continue }
            pieces.append((at, Array(bytes.prefix(Int(min(UInt64(n), size - at))))))
        }
        return MemorySparseSource(size: size, pieces: pieces)
    }
}

/// One fuzz input through the VHD reader and `check`: any error is fine; a crash, hang or
/// runaway allocation is not. Lives in the library so the corpus test runs the same path.
public func fuzzVHDOne(_ input: UnsafeRawBufferPointer) {
    let src = SectorRecordFuzzLayout.unpack(Array(input))
    if let f = try? VHDFile(source: src) {
        _ = try? f.read(at: 0, count: Int(min(f.size, 1 << 20)))
        if f.size > 4096 { _ = try? f.read(at: f.size - 4096, count: 4096) }
        _ = try? f.extents(in: 0..<min(f.size, 64 << 20))
        _ = f.allocatedBytes
    }
    _ = try? VHDCheck.run(source: src)
}
