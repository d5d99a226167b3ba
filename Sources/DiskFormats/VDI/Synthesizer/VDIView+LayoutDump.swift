import BlockCore

extension VDIView {
    /// A readable, deterministic description of the synthesized file for golden files.
    public func layoutDump() -> String {
        let hex = VDI.hex, hex32 = VDI.hex32
        let h = header
        var lines: [String] = []
        lines.append("VDI (synthesized dynamic disk)")
        lines.append("file size \(size) (\(hex(size))), payload starts at \(hex(payloadStart))")
        lines.append("virtual size \(virtualSize) (\(ByteSize.format(virtualSize))), block size \(ByteSize.format(UInt64(blockSize)))")
        lines.append("")
        lines.append("pre-header @0x0: \(h.textString.debugDescription), signature \(hex32(h.signature)), version \(h.version >> 16).\(h.version & 0xFFFF)")
        lines.append("header @0x48: size \(hex(UInt64(h.headerSize))), type \(h.imageTypeRaw) (\(h.imageType?.name ?? "?")), flags \(hex32(h.imageFlags)), description empty")
        lines.append("  block map @\(hex(UInt64(h.blockMapOffset))), data @\(hex(UInt64(h.dataOffset)))")
        lines.append("  legacy geometry \(h.legacyGeometry.map(String.init).joined(separator: "/")), LCHS \(h.lchsGeometry.map(String.init).joined(separator: "/"))")
        lines.append("  disk size \(h.diskSize), block size \(h.blockSize), extra \(h.blockExtra), blocks \(h.blocksInImage), allocated \(h.blocksAllocated)")
        lines.append("  image UUID \(h.imageUUID), modification UUID \(h.modificationUUID)")
        lines.append("  link UUID \(h.linkUUID), parent modification UUID \(h.parentModificationUUID)")
        lines.append("pointer area @\(hex(VDILayout.pointerAreaOffset)): \(hex(UInt64(VDILayout.pointerAreaLength))) bytes, " +
                     (options.pointer.isEmpty ? "empty" : "\(options.pointer.count) bytes, sha256 \(SHA256.hash(options.pointer).hex.prefix(16))"))
        lines.append("block map @\(hex(VDILayout.blockMapOffset)): \(hex(layout.blockMapLength)) bytes, \(layout.blockCount) entries")
        var p: UInt64 = 0
        func gap(_ to: UInt64) {
            var q = p
            for z in zeroBlocks where z.upperBound > q && z.lowerBound < to {
                if z.lowerBound > q { lines.append("  blocks \(q)..<\(z.lowerBound): FREE (0xffffffff)") }
                let e = min(z.upperBound, to)
                lines.append("  blocks \(max(q, z.lowerBound))..<\(e): ZERO (0xfffffffe)")
                q = e
            }
            if q < to { lines.append("  blocks \(q)..<\(to): FREE (0xffffffff)") }
        }
        for run in payload.runs {
            gap(run.firstUnit)
            lines.append("  blocks \(run.firstUnit)..<\(run.firstUnit + run.count): slots \(run.firstRank)..<\(run.firstRank + run.count) at \(hex(layout.blockOffset(rank: run.firstRank)))")
            p = run.firstUnit + run.count
        }
        gap(layout.blockCount)
        lines.append("allocated blocks: \(allocatedBlockCount) of \(layout.blockCount)")
        return lines.joined(separator: "\n") + "\n"
    }

}
