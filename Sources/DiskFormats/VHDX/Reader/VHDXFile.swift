import BlockCore

/// A VHDX file as a block source: dynamic, fixed and differencing disks, logs replayed in memory,
/// writes through the library when opened writable (see VHDXFile+Write.swift).
public final class VHDXFile: WritableBlockSource, VHDXParentIdentity, @unchecked Sendable {
    // @unchecked: immutable after init except `state` (behind its lock); writes are serialized by
    // `writeLock`.

    /// The file's path, when opened from one.
    public let path: String?
    public let isWritable: Bool
    public let identifier: VHDXFileIdentifier
    /// Both header slots as parsed (nil when the slot is not valid), and their errors.
    public let headerSlots: [VHDXHeader?]
    public let headerErrors: [FormatError?]
    /// The region table in use and which copy it came from (1 or 2; 2 when copy 1 is damaged).
    public let regionTable: VHDXRegionTable
    public let regionTableCopy: Int
    public let metadata: VHDXMetadata
    public let geometry: VHDX.BATGeometry
    public let batOffset: UInt64
    /// Entries of the log sequence replayed at open (empty when the log was empty).
    public let replayedLog: [VHDXLogEntry]
    /// The parent of a differencing disk, and where it was found.
    public let parent: VHDXParent?
    public let parentPath: String?

    let backing: any BlockSource
    let raw: RawFile?
    let writeLock = NSLockish()
    let state: Locked<State>

    struct State: @unchecked Sendable {
        // @unchecked: `view` is a Sendable block source; the struct is only touched under the lock.
        var bat: [UInt64]
        var header: VHDXHeader
        var headerSlot: Int
        var sessionStarted = false
        var nextFree: UInt64
        /// The file as parsed: the backing file, or the backing file with the log replayed over it.
        var view: any BlockSource
        var logPending: Bool
    }

    public var size: UInt64 { metadata.virtualSize }
    public var blockSize: UInt32 { metadata.blockSize }
    public var logicalSectorSize: UInt32 { metadata.logicalSectorSize }
    public var isDifferencing: Bool { metadata.hasParent }
    public var header: VHDXHeader { state.withLock { $0.header } }
    /// True while a replayed log lives only in memory (read-only open, or writable before `repair()`).
    public var logNeedsRepair: Bool { state.withLock { $0.logPending } }
    public var vhdxDataWriteGuid: GUID { header.dataWriteGuid }
    public var vhdxLogicalSectorSize: UInt32? { metadata.logicalSectorSize }
    /// The BAT as it stands (a copy).
    public var batEntries: [UInt64] { state.withLock { $0.bat } }

    // MARK: Opening

    /// Opens a VHDX file. A differencing disk's parent is found through its locator and opened by
    /// `parentOpener` (given the resolved path); by default as a read-only VHDXFile, recursively,
    /// with loops reported as `VHDXParentError.loop`. `parentResolver`, when given, is asked
    /// first at every level of the chain: it opens parents that are not plain VHDX files (the
    /// exposure layer passes one for plugin files, so `create -b vm.vhdx` children read their
    /// parent's disk through the filter rather than the plugin's hole) and returns nil for "not mine".
    public static func open(path: String, writable: Bool = false, parentOpener: VHDXParentOpener? = nil,
                            parentResolver: VHDXParentResolver? = nil) throws -> VHDXFile {
        try open(path: path, writable: writable, parentOpener: parentOpener, parentResolver: parentResolver, chain: [])
    }

    static func open(path: String, writable: Bool, parentOpener: VHDXParentOpener?, parentResolver: VHDXParentResolver?,
                     chain: [String]) throws -> VHDXFile {
        let real = (try? VHDXParentPaths.realPath(path)) ?? path
        if chain.contains(real) { throw VHDXParentError.loop(chain: chain + [real]) }
        let raw = try RawFile(path: path, writable: writable)
        let opener: VHDXParentOpener = parentOpener ?? { parentPath in
            if let resolver = parentResolver, let p = try resolver(parentPath) { return p }
            return try VHDXFile.open(path: parentPath, writable: false, parentOpener: nil, parentResolver: parentResolver,
                                     chain: chain + [real])
        }
        return try VHDXFile(backing: raw, raw: raw, path: path, writable: writable) { locator in
            let candidates = VHDXParentPaths.candidates(locator: locator, childPath: path)
            guard !candidates.isEmpty else { throw VHDXParentError.noPath(child: path) }
            guard let found = candidates.first(where: VHDXParentPaths.exists) else {
                throw VHDXParentError.missing(child: path, candidates: candidates)
            }
            let foundReal = (try? VHDXParentPaths.realPath(found)) ?? found
            if foundReal == real || chain.contains(foundReal) { throw VHDXParentError.loop(chain: chain + [real, foundReal]) }
            return (try opener(found), found)
        }
    }

    /// Parses a VHDX held by any block source (an in-memory buffer, a synthesized view), read-only.
    /// A differencing disk needs `parent`.
    public convenience init(source: any BlockSource, parent: VHDXParent? = nil) throws {
        try self.init(backing: source, raw: nil, path: nil, writable: false) { _ in
            guard let p = parent else { throw VHDXParentError.noParentGiven }
            return (p, "<given parent>")
        }
    }

    init(backing: any BlockSource, raw: RawFile?, path: String?, writable: Bool,
         resolveParent: (VHDXParentLocator) throws -> (VHDXParent, String)) throws {
        self.backing = backing
        self.raw = raw
        self.path = path
        self.isWritable = writable
        let fileSize = backing.size
        func readClamped(_ source: any BlockSource, _ at: UInt64, _ n: Int) throws -> [UInt8] {
            guard at < source.size else { return [] }
            return try source.read(at: at, count: Int(min(UInt64(n), source.size - at)))
        }
        guard fileSize >= VHDX.headerSectionSize else {
            throw FormatError(VHDX.formatName, "file", at: 0, "file size \(fileSize) is below the 1 MiB header section")
        }
        identifier = try VHDXFileIdentifier.parse(try backing.read(at: 0, count: 520))

        // Headers: the current one is the valid one with the larger sequence number [SPEC:270].
        var slots: [VHDXHeader?] = [nil, nil]
        var errors: [FormatError?] = [nil, nil]
        for (i, off) in [VHDX.header1Offset, VHDX.header2Offset].enumerated() {
            do {
                let h = try VHDXHeader.parse(try backing.read(at: off, count: VHDX.headerSize), at: off, name: "header \(i + 1)")
                if let (field, reason) = h.fieldProblem() {
                    throw FormatError(VHDX.formatName, "header \(i + 1)", at: off + UInt64(field), reason)
                }
                slots[i] = h
            } catch let e as FormatError {
                errors[i] = e
            }
        }
        headerSlots = slots
        headerErrors = errors
        guard let cur = VHDXHeaderSelection.current(slots[0], slots[1]) else {
            if slots[0] != nil {
                throw FormatError(VHDX.formatName, "headers", at: VHDX.header1Offset, "both headers have the same sequence number but differ")
            }
            throw errors[0] ?? FormatError(VHDX.formatName, "headers", at: VHDX.header1Offset, "no valid header")
        }
        let header = slots[cur]!

        // Log: replay in memory whenever LogGuid ≠ 0, before anything else is read [SPEC:959].
        var view: any BlockSource = backing
        var logEntries: [VHDXLogEntry] = []
        if !header.logGuid.isZero {
            logEntries = try VHDXLogReplay.activeSequence(source: backing, header: header)
            view = VHDXReplayedSource(base: backing, entries: logEntries)
        }
        replayedLog = logEntries
        let viewSize = view.size

        // Region tables: copy 1, else copy 2 (QEMU reads only copy 1).
        var table: VHDXRegionTable
        var copy = 1
        do {
            table = try VHDXRegionTable.parse(try view.read(at: VHDX.regionTable1Offset, count: VHDX.regionTableSize),
                                              at: VHDX.regionTable1Offset, name: "region table 1")
        } catch let e1 as FormatError {
            do {
                table = try VHDXRegionTable.parse(try view.read(at: VHDX.regionTable2Offset, count: VHDX.regionTableSize),
                                                  at: VHDX.regionTable2Offset, name: "region table 2")
                copy = 2
            } catch {
                throw e1
            }
        }
        let tableOffset = copy == 1 ? VHDX.regionTable1Offset : VHDX.regionTable2Offset
        let logRange = header.logLength == 0 ? nil : header.logOffset..<(header.logOffset + UInt64(header.logLength))
        if let (index, reason) = table.problems(logRange: logRange, fileSize: viewSize).first {
            throw FormatError(VHDX.formatName, index.map { "region table \(copy) entry \($0)" } ?? "region table \(copy)",
                              at: tableOffset + (index.map { 16 + UInt64($0) * 32 } ?? 0), reason)
        }
        regionTable = table
        regionTableCopy = copy
        let batRegion = table.entry(VHDX.batRegion)!
        let mdRegion = table.entry(VHDX.metadataRegion)!

        // Metadata.
        let mdTable = try VHDXMetadataTable.parse(try readClamped(view, mdRegion.fileOffset, VHDXMetadataTable.tableSize),
                                                  at: mdRegion.fileOffset, regionLength: UInt64(mdRegion.length))
        let md = try VHDXMetadata.parse(table: mdTable, regionOffset: mdRegion.fileOffset) { at, n in
            try view.read(at: at, count: n)
        }
        metadata = md
        let geo = VHDX.BATGeometry(virtualSize: md.virtualSize, blockSize: md.blockSize,
                                   logicalSectorSize: md.logicalSectorSize, differencing: md.hasParent)
        geometry = geo

        // BAT: the region must hold every entry [SPEC:562]; it lies inside the file (checked above),
        // so the read below is bounded by the file size.
        let (need, o) = geo.totalEntries.multipliedReportingOverflow(by: 8)
        guard !o, need <= UInt64(batRegion.length) else {
            throw FormatError(VHDX.formatName, "BAT region", at: batRegion.fileOffset,
                              "\(geo.totalEntries) entries need \(need) bytes, region holds \(batRegion.length)")
        }
        batOffset = batRegion.fileOffset
        let batBytes = try view.read(at: batRegion.fileOffset, count: Int(need))
        var bat = [UInt64](repeating: 0, count: Int(geo.totalEntries))
        for i in 0..<bat.count { bat[i] = batBytes.le64(i * 8) }

        // Every payload and present SB entry must be a known state pointing inside the file
        // [SPEC:580-700]; checked once here so reads never leave the file.
        var highest = max(viewSize, batRegion.end, mdRegion.end, logRange?.upperBound ?? 0)
        for p in 0..<geo.payloadBlocks {
            let i = Int(geo.payloadIndex(p))
            let e = bat[i]
            let st = VHDX.batState(e)
            let at = batRegion.fileOffset + UInt64(i) * 8
            switch st {
            case 0, 1, 2, 3, 5: continue
            case 7 where !md.hasParent:
                throw FormatError(VHDX.formatName, "BAT entry \(i)", at: at, "PARTIALLY_PRESENT (7) in a disk without a parent")
            case 6, 7:
                let off = VHDX.batOffset(e)
                let len = min(UInt64(md.blockSize), md.virtualSize - p * UInt64(md.blockSize))
                guard off >= VHDX.headerSectionSize, off <= viewSize, len <= viewSize - off else {
                    throw FormatError(VHDX.formatName, "BAT entry \(i)", at: at,
                                      "payload block \(p) at 0x\(String(off, radix: 16)) lies outside the file (size 0x\(String(viewSize, radix: 16)))")
                }
                highest = max(highest, off + UInt64(md.blockSize))
            default:
                throw FormatError(VHDX.formatName, "BAT entry \(i)", at: at, "payload block \(p) has reserved state \(st)")
            }
        }
        if md.hasParent {
            for c in 0..<geo.sectorBitmapBlocks {
                let i = Int(geo.sectorBitmapIndex(c))
                let e = bat[i]
                let at = batRegion.fileOffset + UInt64(i) * 8
                switch VHDX.batState(e) {
                case VHDX.sbBlockNotPresent: continue
                case VHDX.sbBlockPresent:
                    let off = VHDX.batOffset(e)
                    guard off >= VHDX.headerSectionSize, off <= viewSize, VHDX.mib <= viewSize - off else {
                        throw FormatError(VHDX.formatName, "BAT entry \(i)", at: at, "sector bitmap block at 0x\(String(off, radix: 16)) lies outside the file")
                    }
                    highest = max(highest, off + VHDX.mib)
                default:
                    throw FormatError(VHDX.formatName, "BAT entry \(i)", at: at, "sector bitmap entry has invalid state \(VHDX.batState(e))")
                }
            }
        }
        // A partially present block needs its chunk's bitmap [SPEC:670-700].
        if md.hasParent {
            for p in 0..<geo.payloadBlocks where VHDX.batState(bat[Int(geo.payloadIndex(p))]) == 7 {
                let sb = Int(geo.sectorBitmapIndex(p / geo.chunkRatio))
                if VHDX.batState(bat[sb]) != VHDX.sbBlockPresent {
                    throw FormatError(VHDX.formatName, "BAT entry \(geo.payloadIndex(p))", at: batRegion.fileOffset + geo.payloadIndex(p) * 8,
                                      "PARTIALLY_PRESENT block \(p) has no sector bitmap block")
                }
            }
        }

        // Parent.
        if md.hasParent {
            guard let loc = md.parentLocator else {
                throw FormatError(VHDX.formatName, "metadata", at: mdRegion.fileOffset, "HasParent is set but there is no parent locator")
            }
            let (p, pPath) = try resolveParent(loc)
            let linkage = loc["parent_linkage"] ?? ""
            let linkage2 = loc["parent_linkage2"]
            let matches = [linkage, linkage2].compactMap { $0 }.contains { GUID($0) == p.vhdxDataWriteGuid }
            guard matches else {
                throw VHDXParentError.linkageMismatch(child: path ?? "<source>", parent: pPath, linkage: linkage, parentDataWriteGuid: p.vhdxDataWriteGuid)
            }
            if let ps = p.vhdxLogicalSectorSize, ps != md.logicalSectorSize {
                throw VHDXParentError.sectorSizeMismatch(child: path ?? "<source>", parent: pPath, childSize: md.logicalSectorSize, parentSize: ps)
            }
            parent = p
            parentPath = pPath
        } else {
            parent = nil
            parentPath = nil
        }
        state = Locked(State(bat: bat, header: header, headerSlot: cur,
                             nextFree: VHDX.roundUp(highest, to: VHDX.mib), view: view, logPending: !logEntries.isEmpty))
    }

    // MARK: Reading

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        let bs = UInt64(metadata.blockSize)
        var done = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let p = pos / bs
            let inBlock = pos % bs
            let n = Int(min(UInt64(buffer.count - done), bs - inBlock))
            let out = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + n])
            let (entry, sbEntry, view) = state.withLock { s -> (UInt64, UInt64, any BlockSource) in
                let sb = metadata.hasParent ? s.bat[Int(geometry.sectorBitmapIndex(p / geometry.chunkRatio))] : 0
                return (s.bat[Int(geometry.payloadIndex(p))], sb, s.view)
            }
            switch VHDX.batState(entry) {
            case 6:
                try view.read(at: VHDX.batOffset(entry) + inBlock, into: out)
            case 7:
                try readPartial(block: p, inBlock: inBlock, blockOffset: VHDX.batOffset(entry), sbEntry: sbEntry, view: view, into: out)
            case 0 where parent != nil:
                try readParent(at: pos, into: out)
            default:
                out.initializeMemory(as: UInt8.self, repeating: 0)
            }
            done += n
        }
    }

    /// Bytes of a block whose sector bitmap says, sector by sector, child or parent [SPEC:534].
    private func readPartial(block p: UInt64, inBlock: UInt64, blockOffset: UInt64, sbEntry: UInt64,
                             view: any BlockSource, into out: UnsafeMutableRawBufferPointer) throws {
        let runs = try bitmapRuns(block: p, inBlock: inBlock, length: UInt64(out.count), sbEntry: sbEntry, view: view)
        let blockStart = p * UInt64(metadata.blockSize)
        for r in runs {
            let sub = UnsafeMutableRawBufferPointer(rebasing: out[Int(r.start - inBlock)..<Int(r.end - inBlock)])
            if r.present {
                try view.read(at: blockOffset + r.start, into: sub)
            } else {
                try readParent(at: blockStart + r.start, into: sub)
            }
        }
    }

    struct Run { var start: UInt64; var end: UInt64; var present: Bool }

    /// Runs of present/absent sectors covering `inBlock ..< inBlock+length` of block `p`.
    func bitmapRuns(block p: UInt64, inBlock: UInt64, length: UInt64, sbEntry: UInt64, view: any BlockSource) throws -> [Run] {
        let lss = UInt64(metadata.logicalSectorSize)
        let sectorsPerBlock = UInt64(metadata.blockSize) / lss
        let first = inBlock / lss, last = (inBlock + length - 1) / lss
        let bitmapBase = VHDX.batOffset(sbEntry) + (p % geometry.chunkRatio) * (sectorsPerBlock / 8)
        let bits = try view.read(at: bitmapBase + first / 8, count: Int(last / 8 - first / 8 + 1))
        var runs: [Run] = []
        for s in first...last {
            let k = Int(s / 8 - first / 8)
            let present = bits[k] >> (s % 8) & 1 == 1
            let a = max(s * lss, inBlock), b = min((s + 1) * lss, inBlock + length)
            if var l = runs.last, l.present == present { l.end = b; runs[runs.count - 1] = l } else { runs.append(Run(start: a, end: b, present: present)) }
        }
        return runs
    }

    private func readParent(at pos: UInt64, into out: UnsafeMutableRawBufferPointer) throws {
        guard let parent else { out.initializeMemory(as: UInt8.self, repeating: 0); return }
        let end = pos + UInt64(out.count)
        let pEnd = min(end, parent.size)
        if pos < pEnd { try parent.read(at: pos, into: UnsafeMutableRawBufferPointer(rebasing: out[0..<Int(pEnd - pos)])) }
        if pEnd < end {
            let from = Int(max(pEnd, pos) - pos)
            UnsafeMutableRawBufferPointer(rebasing: out[from...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    /// data for present blocks and sectors, zero for ZERO blocks, absent for unallocated blocks of a
    /// disk without parent; a differencing disk reports its parent's extents where it inherits.
    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        let bs = UInt64(metadata.blockSize)
        var out: [Extent] = []
        var pos = r.lowerBound
        while pos < r.upperBound {
            let p = pos / bs
            let inBlock = pos % bs
            let n = min(r.upperBound - pos, bs - inBlock)
            let (entry, sbEntry, view) = state.withLock { s -> (UInt64, UInt64, any BlockSource) in
                let sb = metadata.hasParent ? s.bat[Int(geometry.sectorBitmapIndex(p / geometry.chunkRatio))] : 0
                return (s.bat[Int(geometry.payloadIndex(p))], sb, s.view)
            }
            switch VHDX.batState(entry) {
            case 6: out.append(Extent(offset: pos, length: n, kind: .data))
            case 2: out.append(Extent(offset: pos, length: n, kind: .zero))
            case 7:
                for run in try bitmapRuns(block: p, inBlock: inBlock, length: n, sbEntry: sbEntry, view: view) {
                    let start = p * bs + run.start, len = run.end - run.start
                    if run.present { out.append(Extent(offset: start, length: len, kind: .data)) } else { out += try parentExtents(start, len) }
                }
            case 0 where parent != nil: out += try parentExtents(pos, n)
            default: out.append(Extent(offset: pos, length: n, kind: .absent))
            }
            pos += n
        }
        return coalesce(out)
    }

    private func parentExtents(_ start: UInt64, _ len: UInt64) throws -> [Extent] {
        guard let parent else { return [Extent(offset: start, length: len, kind: .absent)] }
        var out = try parent.extents(in: start..<min(start + len, parent.size))
        let covered = out.last?.end ?? start
        if covered < start + len { out.append(Extent(offset: max(covered, start), length: start + len - max(covered, start), kind: .absent)) }
        return out
    }

    // MARK: Facts

    /// Bytes of payload and sector-bitmap blocks this file holds (not its parents).
    public var allocatedBytes: UInt64 {
        let bat = batEntries
        var total: UInt64 = 0
        for p in 0..<geometry.payloadBlocks where [6, 7].contains(VHDX.batState(bat[Int(geometry.payloadIndex(p))])) {
            total += min(UInt64(metadata.blockSize), metadata.virtualSize - p * UInt64(metadata.blockSize))
        }
        if metadata.hasParent {
            for c in 0..<geometry.sectorBitmapBlocks where VHDX.batState(bat[Int(geometry.sectorBitmapIndex(c))]) == VHDX.sbBlockPresent {
                total += VHDX.mib
            }
        }
        return total
    }

    /// The chain below this file: its parent, the parent's parent, … (paths as found).
    public var parentChain: [String] {
        var out: [String] = []
        var cur: VHDXFile? = self
        while let f = cur, let pp = f.parentPath {
            out.append(pp)
            cur = f.parent as? VHDXFile
        }
        return out
    }
}
