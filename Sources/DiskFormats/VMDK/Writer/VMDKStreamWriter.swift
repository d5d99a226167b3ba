import BlockCore

/// Writes a stream-optimized VMDK (`convert -O vmdk -o subformat=streamOptimized`), the layout of
/// VMware's specification (§4.3), in one forward pass:
///
/// sector 0 header (version 3, flags newline test | compressed | markers, gdOffset "at end"),
/// the embedded descriptor, then from `overHead` for each grain table with allocated grains: its
/// grains (each `lba` u64, `size` u32, a zlib stream, padded to a sector), a grain-table marker
/// and the table; then a grain-directory marker and the directory, a footer marker and the
/// footer (the header with the directory's offset), and the end-of-stream marker.
///
/// Grains are zlib streams (`Deflate.compress`, zlib level 6: deterministic for the same bytes). Allocation as the view's: grains touched by `.data`
/// extents; tables without a grain are not written (directory entry 0). Deterministic. The
/// header's magic is written last, so a half-written file is never taken for a VMDK.
public enum VMDKStreamWriter {
    public static func write(_ source: any BlockSource, toPath path: String, options: VMDKSynthesisOptions,
                             sync: Bool = true) throws -> SparseImageWriter.Stats {
        var o = options
        o.createType = "streamOptimized"
        let sk = try VMDKSkeleton(virtualSize: source.size, options: o)
        let runs = PayloadRunMap.allocatedRuns(in: try source.extents(in: 0..<source.size), virtualSize: source.size, unitSize: o.grainSize).runs
        let gs = o.grainSize, gsec = sk.grainSectors
        var header = VMDKSparseHeader()
        header.version = 3
        header.flags = VMDK.flagNewlineTest | VMDK.flagCompressed | VMDK.flagMarkers
        header.capacity = sk.capacity
        header.grainSize = gsec
        header.descriptorOffset = 1
        header.descriptorSize = sk.descriptorSectors
        header.rgdOffset = 0
        header.gdOffset = VMDK.gdAtEnd
        header.overhead = (1 + sk.descriptorSectors + gsec - 1) / gsec * gsec
        header.compressAlgorithm = VMDK.compressionDeflate

        let out = try RawFile.create(path: path, size: 0)
        var sector = header.overhead
        var written: UInt64 = 0, dataBytes: UInt64 = 0
        func put(_ bytes: [UInt8]) throws {
            var b = bytes
            let pad = (512 - b.count % 512) % 512
            b += [UInt8](repeating: 0, count: pad)
            try out.write(at: sector * 512, b)
            sector += UInt64(b.count) / 512
            written += UInt64(b.count)
        }
        try out.write(at: 512, sk.descriptorBytes)
        written += UInt64(sk.descriptorBytes.count)

        var gd = [UInt32](repeating: 0, count: Int(sk.gtCount))
        var grain = [UInt8](repeating: 0, count: Int(gs))
        var ri = 0
        for t in 0..<sk.gtCount {
            let lo = t * VMDK.gtesPerGT, hi = min(sk.grainCount, lo + VMDK.gtesPerGT)
            var gt = [UInt32](repeating: 0, count: Int(VMDK.gtesPerGT))
            var any = false
            while ri < runs.count && runs[ri].firstUnit < hi {
                let r = runs[ri]
                let a = max(r.firstUnit, lo), b = min(r.firstUnit + r.count, hi)
                for g in a..<b {
                    let v = g * gs
                    let n = Int(min(gs, source.size - v))
                    try grain.withUnsafeMutableBytes { buf in
                        try source.read(at: v, into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<n]))
                    }
                    dataBytes += UInt64(n)
                    // The last grain holds only the bytes inside the disk (as qemu-img writes it;
                    // readers pad a short grain with zeros).
                    let z = grain.withUnsafeBytes { Deflate.compress(UnsafeRawBufferPointer(rebasing: $0[0..<n]), framing: .zlib) }
                    var rec: [UInt8] = []
                    rec.appendLE64(g * gsec)
                    rec.appendLE32(UInt32(z.count))
                    gt[Int(g - lo)] = UInt32(sector)
                    try put(rec + z)
                    any = true
                }
                if r.firstUnit + r.count <= hi { ri += 1 } else { break }
            }
            guard any else { continue }
            try put(VMDKMarker(value: sk.gtSectors, type: .grainTable).serialize())
            gd[Int(t)] = UInt32(sector)
            var bytes: [UInt8] = []
            for e in gt { bytes.appendLE32(e) }
            try put(bytes)
        }
        guard sector + sk.gdSectors + 3 <= UInt64(UInt32.max) else {
            throw VMDKSynthesisError("stream-optimized file past 2^32 sectors: grain offsets are 32-bit")
        }
        try put(VMDKMarker(value: sk.gdSectors, type: .grainDirectory).serialize())
        header.gdOffset = sector
        var gdBytes: [UInt8] = []
        for e in gd { gdBytes.appendLE32(e) }
        try put(gdBytes)
        try put(VMDKMarker(value: 1, type: .footer).serialize())
        try put(header.serialize())
        try put([UInt8](repeating: 0, count: 512))  // end of stream
        // The header last: "KDMV" only once everything else is in place.
        var initial = header
        initial.gdOffset = VMDK.gdAtEnd
        let hb = initial.serialize()
        try out.write(at: 4, Array(hb[4...]))
        if sync { try out.flush() }
        try out.write(at: 0, Array(hb[0..<4]))
        if sync { try out.flush() }
        written += 512
        return SparseImageWriter.Stats(dataBytes: dataBytes, writtenBytes: written)
    }
}
