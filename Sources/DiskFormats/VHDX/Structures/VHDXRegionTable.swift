import BlockCore

/// One region table entry (32 bytes) [SPEC:330-359].
public struct VHDXRegionEntry: Sendable, Equatable {
    public var guid: GUID
    public var fileOffset: UInt64
    public var length: UInt32
    public var required: Bool

    public init(guid: GUID, fileOffset: UInt64, length: UInt32, required: Bool) {
        self.guid = guid
        self.fileOffset = fileOffset
        self.length = length
        self.required = required
    }

    public var end: UInt64 { fileOffset + UInt64(length) }
}

/// A 64 KiB region table [SPEC:307-359].
public struct VHDXRegionTable: Sendable, Equatable {
    public var entries: [VHDXRegionEntry]

    public init(entries: [VHDXRegionEntry]) { self.entries = entries }

    /// Parses and checksums one copy. Entry fields are returned as found; `validate` judges them.
    public static func parse(_ bytes: [UInt8], at offset: UInt64, name: String) throws -> VHDXRegionTable {
        let v = ByteView(bytes, base: offset, format: VHDX.formatName, structure: name)
        guard v.count >= VHDX.regionTableSize else { throw v.error(at: v.count, "truncated: \(v.count) of 65536 bytes") }
        guard try v.slice(0, 4) == VHDX.regionSignature else { throw v.error(at: 0, "signature is not 'regi'") }
        let stored = try v.u32(4)
        let computed = CRC32C.checksum(Array(bytes[0..<VHDX.regionTableSize]), zeroingFieldAt: 4)
        guard stored == computed else {
            throw v.error(at: 4, "checksum 0x\(String(stored, radix: 16)) does not match computed 0x\(String(computed, radix: 16))")
        }
        let count = try v.u32(8)
        guard count <= VHDX.maxRegionEntries else { throw v.error(at: 8, "entry count \(count) exceeds 2047") }
        var entries: [VHDXRegionEntry] = []
        for i in 0..<Int(count) {
            let at = 16 + i * 32
            entries.append(VHDXRegionEntry(
                guid: GUID(bytes: try v.slice(at, 16)),
                fileOffset: try v.u64(at + 16),
                length: try v.u32(at + 24),
                required: try v.u32(at + 28) & 1 != 0))
        }
        return VHDXRegionTable(entries: entries)
    }

    /// Structural rules for the entries [SPEC:349-359]: alignment, known required regions, BAT and
    /// metadata exactly once, no overlaps with each other or the log, inside `fileSize`.
    /// Returns (entry index or nil, reason) for each problem.
    public func problems(logRange: Range<UInt64>?, fileSize: UInt64) -> [(index: Int?, reason: String)] {
        var out: [(Int?, String)] = []
        var seen: [GUID: Int] = [:]
        for (i, e) in entries.enumerated() {
            if e.fileOffset % VHDX.mib != 0 || e.fileOffset < VHDX.headerSectionSize {
                out.append((i, "offset 0x\(String(e.fileOffset, radix: 16)) is not 1 MiB-aligned at or after 1 MiB"))
            }
            if UInt64(e.length) % VHDX.mib != 0 || e.length == 0 {
                out.append((i, "length 0x\(String(e.length, radix: 16)) is not a non-zero multiple of 1 MiB"))
            }
            let known = e.guid == VHDX.batRegion || e.guid == VHDX.metadataRegion
            if !known && e.required { out.append((i, "unknown required region \(e.guid)")) }
            if known {
                if seen[e.guid] != nil { out.append((i, "region \(e.guid) appears more than once")) }
                seen[e.guid] = i
            }
            let (end, overflow) = e.fileOffset.addingReportingOverflow(UInt64(e.length))
            if overflow || end > fileSize {
                out.append((i, "region 0x\(String(e.fileOffset, radix: 16))+0x\(String(e.length, radix: 16)) extends past end of file (0x\(String(fileSize, radix: 16)))"))
            }
            if let log = logRange, !overflow, e.fileOffset < log.upperBound && log.lowerBound < end {
                out.append((i, "region overlaps the log 0x\(String(log.lowerBound, radix: 16))-0x\(String(log.upperBound, radix: 16))"))
            }
            for j in 0..<i {
                let o = entries[j]
                if e.fileOffset < o.end && o.fileOffset < e.end && !overflow {
                    out.append((i, "region overlaps region entry \(j)"))
                }
            }
        }
        if seen[VHDX.batRegion] == nil { out.append((nil, "no BAT region")) }
        if seen[VHDX.metadataRegion] == nil { out.append((nil, "no metadata region")) }
        return out
    }

    public func entry(_ guid: GUID) -> VHDXRegionEntry? { entries.first { $0.guid == guid } }

    /// The 64 KiB table with its checksum.
    public func serialize() -> [UInt8] {
        precondition(entries.count <= Int(VHDX.maxRegionEntries))
        var out = [UInt8](repeating: 0, count: VHDX.regionTableSize)
        out.put(VHDX.regionSignature, at: 0)
        out.putLE32(UInt32(entries.count), at: 8)
        for (i, e) in entries.enumerated() {
            let at = 16 + i * 32
            out.put(e.guid.bytes, at: at)
            out.putLE64(e.fileOffset, at: at + 16)
            out.putLE32(e.length, at: at + 24)
            out.putLE32(e.required ? 1 : 0, at: at + 28)
        }
        out.putLE32(CRC32C.checksum(out, zeroingFieldAt: 4), at: 4)
        return out
    }
}
