import BlockCore
import DiskFormats
import Foundation

/// A readable dump of a VHDX file as a parser sees it — file identifier, both headers, the region
/// table, metadata items, the BAT summarized as runs, and the MBR of the virtual disk — so a
/// golden mismatch shows *which* structure changed. Built from `VHDXFile`'s parsed structures
/// (not from the synthesizer), so it describes the bytes actually served.
public enum VHDXLayout {
    public static func dump(file url: URL) -> String {
        let vhdx: VHDXFile
        do { vhdx = try VHDXFile.open(path: url.path) } catch { return "VHDX does not open: \(error)\n" }
        func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        var lines: [String] = []
        lines.append("file identifier: creator \"\(vhdx.identifier.creator)\"")
        for (i, slot) in vhdx.headerSlots.enumerated() {
            if let h = slot {
                lines.append("header \(i + 1): sequence \(h.sequenceNumber), version \(h.version), log version \(h.logVersion), log \(hex(UInt64(h.logLength))) bytes at \(hex(h.logOffset))")
                lines.append("  FileWriteGuid \(h.fileWriteGuid)  DataWriteGuid \(h.dataWriteGuid)  LogGuid \(h.logGuid)")
            } else {
                let why = i < vhdx.headerErrors.count ? vhdx.headerErrors[i].map { "\($0)" } ?? "absent" : "absent"
                lines.append("header \(i + 1): INVALID — \(why)")
            }
        }
        lines.append("current header: sequence \(vhdx.header.sequenceNumber)")
        lines.append("region table (copy \(vhdx.regionTableCopy + 1) used): \(vhdx.regionTable.entries.count) entries")
        for e in vhdx.regionTable.entries {
            let name = e.guid == VHDX.batRegion ? "BAT" : e.guid == VHDX.metadataRegion ? "metadata" : "unknown"
            lines.append("  \(name) \(e.guid) offset \(hex(e.fileOffset)) length \(hex(UInt64(e.length))) required \(e.required)")
        }
        let m = vhdx.metadata
        lines.append("metadata: block size \(m.blockSize), leave allocated \(m.leaveBlocksAllocated), has parent \(m.hasParent)")
        lines.append("  virtual size \(m.virtualSize), virtual disk ID \(m.virtualDiskID), sectors \(m.logicalSectorSize)/\(m.physicalSectorSize)")
        for item in m.userItems + m.otherItems {
            lines.append("  item \(item.itemID) flags \(hex(UInt64(item.flags))) \(item.data.count) bytes sha256 \(SHA256.hash(item.data).hex.prefix(16))")
        }
        let g = vhdx.geometry
        let bat = vhdx.batEntries
        lines.append("BAT at \(hex(vhdx.batOffset)): \(bat.count) entries, \(g.payloadBlocks) payload blocks, chunk ratio \(g.chunkRatio)")
        var p: UInt64 = 0
        while p < g.payloadBlocks {
            let i = Int(g.payloadIndex(p))
            guard i < bat.count else { lines.append("  block \(p): no BAT entry"); break }
            let state = VHDX.batState(bat[i]), offset = VHDX.batOffset(bat[i])
            var q = p + 1
            while q < g.payloadBlocks {
                let j = Int(g.payloadIndex(q))
                guard j < bat.count, VHDX.batState(bat[j]) == state else { break }
                let expected = offset == 0 ? 0 : offset + (q - p) * UInt64(g.blockSize)
                guard VHDX.batOffset(bat[j]) == expected else { break }
                q += 1
            }
            let at = offset == 0 ? "" : " at \(hex(offset))…\(hex(offset + (q - p) * UInt64(g.blockSize)))"
            lines.append("  blocks \(p)–\(q - 1): \(stateName(state))\(at)")
            p = q
        }
        let bitmaps = (0..<g.sectorBitmapBlocks).filter { k in
            let i = Int((k + 1) * (g.chunkRatio + 1) - 1)
            return i < bat.count && bat[i] != 0
        }.count
        lines.append("  sector bitmap entries in use: \(bitmaps) of \(g.sectorBitmapBlocks)")
        lines.append("virtual disk sector 0 (as this file holds it; a plugin file's payload is a hole):")
        do {
            let sector = try vhdx.read(at: 0, count: 512)
            lines.append(RawDiskLayout.dump(sector: sector, diskSize: vhdx.size).split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        } catch {
            lines.append("  unreadable: \(error)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func stateName(_ s: UInt8) -> String {
        switch s {
        case 0: return "NOT_PRESENT"
        case 1: return "UNDEFINED"
        case 2: return "ZERO"
        case 3: return "UNMAPPED"
        case 6: return "FULLY_PRESENT"
        case 7: return "PARTIALLY_PRESENT"
        default: return "state \(s)"
        }
    }
}
