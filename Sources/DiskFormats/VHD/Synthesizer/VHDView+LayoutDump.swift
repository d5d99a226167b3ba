import BlockCore

extension VHDView {
    /// A readable, deterministic description of the synthesized file for golden files.
    public func layoutDump() -> String {
        let hex = VHD.hex, hex32 = VHD.hex32
        var lines: [String] = []
        let f = footer
        lines.append("VHD (synthesized \(subformat.rawValue) disk)")
        lines.append("file size \(size) (\(hex(size))), payload starts at \(hex(payloadStart)), footer at \(hex(footerOffset))")
        lines.append("virtual size \(virtualSize) (\(ByteSize.format(virtualSize)))" + (subformat == .dynamic ? ", block size \(ByteSize.format(UInt64(blockSize)))" : ""))
        lines.append("")
        lines.append("footer" + (subformat == .dynamic ? " @0x0 and" : "") + " @\(hex(footerOffset)) (identical): checksum \(hex32(f.checksum))")
        lines.append("  features \(hex32(f.features)), version \(hex32(f.formatVersion)), data offset \(f.dataOffset == .max ? "none (0xffffffffffffffff)" : hex(f.dataOffset))")
        lines.append("  timestamp \(f.timestamp), creator \"\(VHD.fourCC(f.creatorApp))\" version \(hex32(f.creatorVersion)) host \"\(VHD.fourCC(f.creatorHostOS))\"")
        lines.append("  original size \(f.originalSize), current size \(f.currentSize), geometry C/H/S \(f.geometry) (\(f.geometry.sectors) sectors)")
        lines.append("  disk type \(f.diskTypeRaw) (\(f.diskType?.name ?? "?")), unique id \(f.uniqueIDText), saved state \(f.savedState)")
        if let h = dynamicHeader {
            lines.append("dynamic disk header @\(hex(VHDLayout.dynamicHeaderOffset)): checksum \(hex32(h.checksum))")
            lines.append("  table offset \(hex(h.tableOffset)), max table entries \(h.maxTableEntries), block size \(h.blockSize), version \(hex32(h.headerVersion))")
            lines.append("  parent: none (unique id zero, no locators)")
            lines.append("pointer area @\(hex(VHDLayout.pointerAreaOffset)): \(hex(UInt64(VHDLayout.pointerAreaLength))) bytes, " +
                         (options.pointer.isEmpty ? "empty" : "\(options.pointer.count) bytes, sha256 \(SHA256.hash(options.pointer).hex.prefix(16))"))
            lines.append("BAT @\(hex(VHDLayout.batOffset)): \(hex(layout.batLength)) bytes, \(layout.blockCount) entries")
            lines.append("slots: \(hex(layout.slotSize)) bytes each: \(hex(layout.slotPad - layout.bitmapLength)) zero, \(hex(layout.bitmapLength)) sector bitmap (all ones), \(hex(UInt64(blockSize))) data")
            var p: UInt64 = 0
            for run in payload.runs {
                if run.firstUnit > p { lines.append("  blocks \(p)..<\(run.firstUnit): unallocated (0xffffffff)") }
                let a = layout.batEntry(rank: run.firstRank), b = layout.batEntry(rank: run.firstRank + run.count - 1)
                lines.append("  blocks \(run.firstUnit)..<\(run.firstUnit + run.count): BAT \(hex32(a))…\(hex32(b)), data at \(hex(layout.dataOffset(rank: run.firstRank)))")
                p = run.firstUnit + run.count
            }
            if p < layout.blockCount { lines.append("  blocks \(p)..<\(layout.blockCount): unallocated (0xffffffff)") }
            lines.append("allocated blocks: \(allocatedBlockCount) of \(layout.blockCount)")
        } else {
            lines.append("data @0x0: \(hex(virtualSize)) bytes, the virtual disk as is")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
