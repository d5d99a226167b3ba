import BlockCore

extension VHDXView {
    /// A readable, deterministic description of the synthesized file for golden files: header
    /// fields, region tables, metadata items, and the BAT summarized as runs of equal state.
    /// Contains no paths, times or anything not derived from the inputs.
    public func layoutDump() -> String {
        func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        func hex32(_ v: UInt32) -> String {
            let s = String(v, radix: 16)
            return "0x" + String(repeating: "0", count: max(0, 8 - s.count)) + s
        }
        var lines: [String] = []
        lines.append("VHDX (synthesized dynamic disk)")
        lines.append("file size \(size) (\(hex(size))), payload starts at \(hex(payloadStart))")
        lines.append("virtual size \(virtualSize) (\(ByteSize.format(virtualSize))), block size \(ByteSize.format(UInt64(blockSize))), logical sector \(logicalSectorSize), physical sector \(physicalSectorSize)")
        lines.append("")
        lines.append("file identifier @0x0: \"vhdxfile\", creator \"\(options.creator)\"")
        for (name, at, h) in [("header 1", VHDX.header1Offset, header1), ("header 2", VHDX.header2Offset, header2)] {
            lines.append("\(name) @\(hex(at)): sequence \(h.le64(8)), checksum \(hex32(h.le32(4)))")
            lines.append("  FileWriteGuid \(GUID(bytes: Array(h[16..<32])))")
            lines.append("  DataWriteGuid \(GUID(bytes: Array(h[32..<48])))")
            lines.append("  LogGuid       \(GUID(bytes: Array(h[48..<64])))")
            lines.append("  LogVersion \(h.le16(64)), Version \(h.le16(66)), log \(hex(UInt64(h.le32(68)))) bytes at \(hex(h.le64(72)))")
        }
        let t = regionTable
        lines.append("region table 1 @\(hex(VHDX.regionTable1Offset)), region table 2 @\(hex(VHDX.regionTable2Offset)) (identical): checksum \(hex32(t.le32(4))), \(t.le32(8)) entries")
        for i in 0..<Int(t.le32(8)) {
            let at = 16 + 32 * i
            let g = GUID(bytes: Array(t[at..<at + 16]))
            let name = g == VHDX.batRegion ? "BAT" : g == VHDX.metadataRegion ? "metadata" : "?"
            lines.append("  \(name.padding(8)) \(g) offset \(hex(t.le64(at + 16))) length \(hex(UInt64(t.le32(at + 24)))) required \(t.le32(at + 28) & 1)")
        }
        lines.append("log @\(hex(logOffset)): \(hex(logLength)) bytes, empty (LogGuid zero)")
        lines.append("metadata @\(hex(metadataOffset)): \(hex(metadataLength)) bytes, \(metadataEntries.count) entries")
        for e in metadataEntries {
            var value: String
            switch e.id {
            case VHDX.fileParametersItem: value = "block size \(e.payload.le32(0)), flags \(e.payload.le32(4))"
            case VHDX.virtualDiskSizeItem: value = "\(e.payload.le64(0))"
            case VHDX.virtualDiskIDItem: value = "\(GUID(bytes: e.payload))"
            case VHDX.logicalSectorSizeItem, VHDX.physicalSectorSizeItem: value = "\(e.payload.le32(0))"
            default: value = "\(e.payload.count) bytes, sha256 \(SHA256.hash(e.payload).hex.prefix(16))"
            }
            lines.append("  \(e.name.padding(20)) \(e.id) +\(hex(UInt64(e.offset))) len \(e.length) flags \(hex(UInt64(e.flags))): \(value)")
        }
        let g = geometry
        lines.append("BAT @\(hex(batOffset)): \(hex(batLength)) bytes, \(g.totalEntries) entries (\(g.payloadBlocks) payload, \(g.totalEntries - g.payloadBlocks) sector bitmap), chunk ratio \(g.chunkRatio)")
        lines.append("  sector-bitmap entries: all 0 (NOT_PRESENT)")
        // Payload entries as runs: allocated runs and the ZERO gaps between them.
        var p: UInt64 = 0
        let bs = UInt64(blockSize)
        for run in payload.runs {
            if run.firstUnit > p { lines.append("  blocks \(p)..<\(run.firstUnit): ZERO (2), offset 0") }
            let off = payloadStart + run.firstRank * bs
            lines.append("  blocks \(run.firstUnit)..<\(run.firstUnit + run.count): FULLY_PRESENT (6) at \(hex(off))..<\(hex(off + run.count * bs))")
            p = run.firstUnit + run.count
        }
        if p < g.payloadBlocks { lines.append("  blocks \(p)..<\(g.payloadBlocks): ZERO (2), offset 0") }
        lines.append("allocated blocks: \(allocatedBlockCount) of \(g.payloadBlocks)")
        return lines.joined(separator: "\n") + "\n"
    }
}

extension String {
    fileprivate func padding(_ width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
