import BlockCore

extension VMDKView {
    /// A readable, deterministic description for golden files: header fields, the descriptor,
    /// where the directories and tables lie, and the allocated grains as runs.
    public func layoutDump() -> String {
        func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        let l = layout, h = l.header
        var lines: [String] = []
        lines.append("VMDK (synthesized \(options.createType))")
        lines.append("file size \(size) (\(hex(size))), payload starts at \(hex(payloadStart))")
        lines.append("virtual size \(virtualSize) (\(ByteSize.format(virtualSize))), grain \(ByteSize.format(grainSize)), \(l.grainCount) grains, \(l.gtCount) grain tables of \(VMDK.gtesPerGT) entries")
        lines.append("")
        lines.append("header @0x0: \"KDMV\" version \(h.version), flags \(hex(UInt64(h.flags))) (newline test, redundant grain table)")
        lines.append("  capacity \(h.capacity) sectors, grainSize \(h.grainSize), numGTEsPerGT \(h.numGTEsPerGT), compressAlgorithm \(h.compressAlgorithm)")
        lines.append("  descriptorOffset \(h.descriptorOffset), descriptorSize \(h.descriptorSize), rgdOffset \(h.rgdOffset), gdOffset \(h.gdOffset), overHead \(h.overhead) (sectors)")
        let text = l.descriptor.render()
        lines.append("descriptor @\(hex(h.descriptorOffset * VMDK.sector)): \(text.utf8.count) of \(l.descriptorSectors * VMDK.sector) bytes")
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() { lines.append("  | \(line)") }
        lines.append("redundant grain directory @\(hex(l.rgdOffset * VMDK.sector)): \(l.gtCount) entries, tables from \(hex(l.rgtSector(0) * VMDK.sector)) every \(hex(l.gtSectors * VMDK.sector))")
        lines.append("grain directory @\(hex(l.gdOffset * VMDK.sector)): \(l.gtCount) entries, tables from \(hex(l.gtSector(0) * VMDK.sector)) every \(hex(l.gtSectors * VMDK.sector))")
        var g: UInt64 = 0
        for run in payload.runs {
            if run.firstUnit > g { lines.append("  grains \(g)..<\(run.firstUnit): unallocated (GTE 0)") }
            let off = payloadStart + run.firstRank * grainSize
            lines.append("  grains \(run.firstUnit)..<\(run.firstUnit + run.count): at \(hex(off))..<\(hex(off + run.count * grainSize)) (GTE \(off / VMDK.sector)…)")
            g = run.firstUnit + run.count
        }
        if g < l.grainCount { lines.append("  grains \(g)..<\(l.grainCount): unallocated (GTE 0)") }
        lines.append("allocated grains: \(allocatedGrainCount) of \(l.grainCount)")
        return lines.joined(separator: "\n") + "\n"
    }
}
