import BlockCore

/// `check` for VHDX: stricter than `qemu-img check`, which only looks at BAT placement
/// (vhdx-notes §8). Every rule names its structure and offset.
public enum VHDXCheck {
    public typealias CannotCheck = CannotCheckError

    /// Checks the file at `path`. Throws `CannotCheck`/`IOError` when the file cannot be checked
    /// at all (unreadable, not a VHDX).
    public static func run(path: String) throws -> CheckReport {
        let f = try RawFile(path: path)
        return try run(source: f, path: path)
    }

    /// Checks a VHDX held by any source. Without a path the parent of a differencing disk is not
    /// looked for.
    public static func run(source: any BlockSource, path: String? = nil) throws -> CheckReport {
        var c = Checker(source: source, path: path)
        try c.run()
        return CheckReport(path: path ?? "<source>", format: VHDX.formatName, findings: c.findings)
    }

    struct Checker {
        let source: any BlockSource
        let path: String?
        var findings: [CheckFinding] = []

        init(source: any BlockSource, path: String?) {
            self.source = source
            self.path = path
        }

        mutating func add(_ structure: String, _ offset: UInt64, _ message: String, _ severity: CheckFinding.Severity = .corruption) {
            findings.append(CheckFinding(structure: structure, offset: offset, message: message, severity: severity))
        }

        func read(_ at: UInt64, _ n: Int) throws -> [UInt8] {
            guard at < source.size else { return [UInt8](repeating: 0, count: n) }
            var b = try source.read(at: at, count: Int(min(UInt64(n), source.size - at)))
            if b.count < n { b += [UInt8](repeating: 0, count: n - b.count) }
            return b
        }

        mutating func run() throws {
            let size = source.size
            guard size >= 8, try source.read(at: 0, count: 8) == VHDX.fileSignature else {
                throw CannotCheck(reason: "not a VHDX file (no 'vhdxfile' signature)")
            }
            if size < VHDX.headerSectionSize {
                add("file", 0, "file size \(size) is below the 1 MiB header section: truncated")
            }

            // Headers [SPEC:251-289].
            var slots: [VHDXHeader?] = [nil, nil]
            for (i, off) in [VHDX.header1Offset, VHDX.header2Offset].enumerated() {
                do {
                    let h = try VHDXHeader.parse(try read(off, VHDX.headerSize), at: off, name: "header \(i + 1)")
                    if let (field, reason) = h.fieldProblem() {
                        add("header \(i + 1)", off + UInt64(field), reason)
                    } else {
                        slots[i] = h
                    }
                } catch let e as FormatError { findings.append(CheckFinding(e)) }
            }
            guard let cur = VHDXHeaderSelection.current(slots[0], slots[1]) else {
                add("headers", VHDX.header1Offset, slots[0] == nil ? "no valid header" : "headers have equal sequence numbers but differ")
                return
            }
            let header = slots[cur]!
            let logRange = header.logLength == 0 ? nil : header.logOffset..<(header.logOffset + UInt64(header.logLength))
            if let l = logRange, l.upperBound > size {
                add("log", header.logOffset, "log region 0x\(String(l.lowerBound, radix: 16))-0x\(String(l.upperBound, radix: 16)) extends past end of file (0x\(String(size, radix: 16)))")
            }

            // Log [SPEC:497-524]: a pending log is reported; an unusable one is corruption.
            var view: any BlockSource = source
            if !header.logGuid.isZero {
                do {
                    let seq = try VHDXLogReplay.activeSequence(source: source, header: header)
                    add("log", header.logOffset, "log is not empty: \(seq.count) entries (sequence \(seq.first!.sequenceNumber)–\(seq.last!.sequenceNumber)) must be replayed (repair)", .warning)
                    view = VHDXReplayedSource(base: source, entries: seq)
                } catch let e as FormatError {
                    findings.append(CheckFinding(e))
                    return
                }
            }
            let vsize = view.size

            // Region tables: both copies checksummed, and they must agree.
            var tables: [VHDXRegionTable?] = [nil, nil]
            for (i, off) in [VHDX.regionTable1Offset, VHDX.regionTable2Offset].enumerated() {
                do {
                    tables[i] = try VHDXRegionTable.parse(try readView(view, off, VHDX.regionTableSize), at: off, name: "region table \(i + 1)")
                } catch let e as FormatError { findings.append(CheckFinding(e)) }
            }
            if let a = tables[0], let b = tables[1], a != b {
                add("region table 2", VHDX.regionTable2Offset, "differs from region table 1")
            }
            guard let tableIndex = tables[0] != nil ? 0 : (tables[1] != nil ? 1 : nil) else { return }
            let table = tables[tableIndex]!
            let tableOffset = tableIndex == 0 ? VHDX.regionTable1Offset : VHDX.regionTable2Offset
            let problems = table.problems(logRange: logRange, fileSize: vsize)
            for (index, reason) in problems {
                add(index.map { "region table \(tableIndex + 1) entry \($0)" } ?? "region table \(tableIndex + 1)",
                    tableOffset + (index.map { 16 + UInt64($0) * 32 } ?? 0), reason)
            }
            guard problems.isEmpty, let batRegion = table.entry(VHDX.batRegion), let mdRegion = table.entry(VHDX.metadataRegion) else { return }

            // Metadata [SPEC:702-912].
            let md: VHDXMetadata
            do {
                let mt = try VHDXMetadataTable.parse(try readView(view, mdRegion.fileOffset, VHDXMetadataTable.tableSize),
                                                     at: mdRegion.fileOffset, regionLength: UInt64(mdRegion.length))
                md = try VHDXMetadata.parse(table: mt, regionOffset: mdRegion.fileOffset) { at, n in try readView(view, at, n) }
                for (i, e) in mt.entries.enumerated() where !e.isUser {
                    let at = mdRegion.fileOffset + 32 + UInt64(i) * 32 + 24
                    let expectVD = [VHDX.virtualDiskSizeItem, VHDX.virtualDiskIDItem, VHDX.logicalSectorSizeItem, VHDX.physicalSectorSizeItem].contains(e.itemID)
                    let known = expectVD || e.itemID == VHDX.fileParametersItem || e.itemID == VHDX.parentLocatorItem
                    if known && !e.isRequired { add("metadata entry \(i)", at, "known item \(e.itemID) lacks IsRequired") }
                    if known && e.isVirtualDisk != expectVD { add("metadata entry \(i)", at, "item \(e.itemID) has IsVirtualDisk = \(e.isVirtualDisk), expected \(expectVD)") }
                }
            } catch let e as FormatError {
                findings.append(CheckFinding(e))
                return
            }
            if md.leaveBlocksAllocated && md.hasParent {
                add("file parameters", mdRegion.fileOffset, "LeaveBlocksAllocated and HasParent are both set")
            }
            let geo = VHDX.BATGeometry(virtualSize: md.virtualSize, blockSize: md.blockSize,
                                       logicalSectorSize: md.logicalSectorSize, differencing: md.hasParent)
            let need = geo.totalEntries * 8
            guard need <= UInt64(batRegion.length) else {
                add("BAT region", batRegion.fileOffset, "\(geo.totalEntries) entries need \(need) bytes, region holds \(batRegion.length)")
                return
            }

            // BAT [SPEC:562-700].
            let bytes = try readView(view, batRegion.fileOffset, Int(need))
            let bs = UInt64(md.blockSize)
            var fixed: [(start: UInt64, end: UInt64, name: String)] = [(0, VHDX.headerSectionSize, "the header section"),
                                                                         (batRegion.fileOffset, batRegion.end, "the BAT region"),
                                                                         (mdRegion.fileOffset, mdRegion.end, "the metadata region")]
            if let l = logRange { fixed.append((l.lowerBound, l.upperBound, "the log")) }
            var blocks: [(start: UInt64, end: UInt64, index: Int)] = []
            var byOffset: [UInt64: Int] = [:]
            func entryName(_ i: Int) -> String { "BAT entry \(i)" }
            for i in 0..<Int(geo.totalEntries) {
                let e = bytes.le64(i * 8)
                let at = batRegion.fileOffset + UInt64(i) * 8
                let isSB = UInt64(i) % (geo.chunkRatio + 1) == geo.chunkRatio
                let st = VHDX.batState(e)
                let off = VHDX.batOffset(e)
                if VHDX.batReservedBits(e) != 0 { add(entryName(i), at, "reserved bits 0x\(String(VHDX.batReservedBits(e), radix: 16)) are set") }
                var length: UInt64 = 0
                if isSB {
                    if !md.hasParent {
                        if e != 0 { add(entryName(i), at, "sector bitmap entry 0x\(String(e, radix: 16)) in a disk without parent must be 0") }
                        continue
                    }
                    switch st {
                    case VHDX.sbBlockNotPresent:
                        if off != 0 { add(entryName(i), at, "SB_BLOCK_NOT_PRESENT with a non-zero file offset") }
                        continue
                    case VHDX.sbBlockPresent: length = VHDX.mib
                    default: add(entryName(i), at, "sector bitmap entry has invalid state \(st)"); continue
                    }
                } else {
                    let p = UInt64(i) - UInt64(i) / (geo.chunkRatio + 1)
                    if p >= geo.payloadBlocks {
                        // Padding of a differencing disk's last chunk.
                        if e != 0 { add(entryName(i), at, "entry past the last payload block is not 0") }
                        continue
                    }
                    switch st {
                    case 0, 1, 3, 5: continue
                    case 2:
                        if off != 0 { add(entryName(i), at, "PAYLOAD_BLOCK_ZERO with non-zero file offset 0x\(String(off, radix: 16)) (must be 0)") }
                        continue
                    case 6: length = min(bs, md.virtualSize - p * bs)
                    case 7:
                        guard md.hasParent else { add(entryName(i), at, "PARTIALLY_PRESENT (7) in a disk without a parent"); continue }
                        length = min(bs, md.virtualSize - p * bs)
                        let sb = bytes.le64(Int(geo.sectorBitmapIndex(p / geo.chunkRatio)) * 8)
                        if VHDX.batState(sb) != VHDX.sbBlockPresent { add(entryName(i), at, "PARTIALLY_PRESENT block \(p) has no sector bitmap block") }
                    default:
                        add(entryName(i), at, "invalid payload block state \(st)")
                        continue
                    }
                }
                let what = isSB ? "sector bitmap block" : "payload block"
                if off < VHDX.headerSectionSize {
                    add(entryName(i), at, "\(what) offset 0x\(String(off, radix: 16)) lies in the header section")
                    continue
                }
                let (end, o) = off.addingReportingOverflow(length)
                if o || end > size {
                    add(entryName(i), at, "\(what) 0x\(String(off, radix: 16))-0x\(String(o ? UInt64.max : end, radix: 16)) points past end of file (0x\(String(size, radix: 16)))")
                    continue
                }
                if let first = byOffset[off] {
                    add(entryName(i), at, "\(what) offset 0x\(String(off, radix: 16)) duplicates BAT entry \(first)")
                    continue
                }
                byOffset[off] = i
                for f in fixed where off < f.end && f.start < off + (isSB ? VHDX.mib : bs) && off < f.end && f.start < end {
                    add(entryName(i), at, "\(what) 0x\(String(off, radix: 16))-0x\(String(end, radix: 16)) overlaps \(f.name)")
                }
                blocks.append((off, isSB ? off + VHDX.mib : off + length, i))
            }
            blocks.sort { $0.start < $1.start }
            for k in blocks.indices.dropFirst() where blocks[k].start < blocks[k - 1].end {
                add(entryName(blocks[k].index), batRegion.fileOffset + UInt64(blocks[k].index) * 8,
                    "block at 0x\(String(blocks[k].start, radix: 16)) overlaps the block of BAT entry \(blocks[k - 1].index)")
            }

            // Parent linkage, through the reader (which resolves and verifies the chain).
            guard !findings.contains(where: { $0.severity == .corruption }) else { return }
            if md.hasParent, let path {
                do {
                    _ = try VHDXFile.open(path: path)
                } catch let e as VHDXParentError {
                    add("parent locator", mdRegion.fileOffset, e.description)
                } catch let e as FormatError {
                    findings.append(CheckFinding(e))
                }
            } else if md.hasParent {
                add("parent locator", mdRegion.fileOffset, "parent not checked: no path to resolve it from", .warning)
            } else {
                do { _ = try VHDXFile(source: source) } catch let e as FormatError { findings.append(CheckFinding(e)) }
            }
        }

        func readView(_ view: any BlockSource, _ at: UInt64, _ n: Int) throws -> [UInt8] {
            guard at < view.size else { return [UInt8](repeating: 0, count: n) }
            var b = try view.read(at: at, count: Int(min(UInt64(n), view.size - at)))
            if b.count < n { b += [UInt8](repeating: 0, count: n - b.count) }
            return b
        }
    }
}
