import BlockCore

/// Writes into a VHDX file.
///
/// Crash-safe order, without the log (every metadata change is one aligned 8-byte BAT entry write
/// or a bitmap change that only becomes visible through a BAT entry):
/// 1. first write of the session: both headers get a new FileWriteGuid and DataWriteGuid, written
///    one slot at a time with a flush between [SPEC:291-305];
/// 2. a new payload block is appended at the 1 MiB-aligned end of file, its data written, and (for
///    a differencing child) its sector-bitmap bits written fresh; flush;
/// 3. then the BAT entry (a single 8-byte write inside one sector) is updated; flush.
/// A crash before 3 leaves an unreferenced block (space leaked, nothing lost that was acknowledged);
/// a crash after 3 leaves a complete block. Writes into already present blocks go in place; for a
/// partially present block the data is flushed before its bitmap bits are set.
extension VHDXFile {
    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        guard isWritable, let raw else { throw BlockSourceError.readOnly(path ?? "VHDX source") }
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        try writeLock.withLock {
            guard !state.withLock({ $0.logPending }) else {
                throw FormatError(VHDX.formatName, "log", at: header.logOffset, "the log must be replayed (repair) before writing")
            }
            // Whole logical sectors only: a differencing child tracks presence per sector.
            let lss = UInt64(metadata.logicalSectorSize)
            let start = offset / lss * lss
            let end = min(VHDX.roundUp(offset + UInt64(buffer.count), to: lss), size)
            var data: [UInt8]
            if start == offset && end == offset + UInt64(buffer.count) {
                data = Array(buffer)
            } else {
                data = try read(at: start, count: Int(end - start))
                data.withUnsafeMutableBytes { d in
                    (d.baseAddress! + Int(offset - start)).copyMemory(from: buffer.baseAddress!, byteCount: buffer.count)
                }
            }
            try beginSessionIfNeeded(raw)
            let bs = UInt64(metadata.blockSize)
            var pos = start
            while pos < end {
                let p = pos / bs
                let inBlock = pos % bs
                let n = min(end - pos, bs - inBlock)
                try data.withUnsafeBytes { d in
                    try writeBlock(raw, block: p, inBlock: inBlock,
                                   bytes: UnsafeRawBufferPointer(rebasing: d[Int(pos - start)..<Int(pos - start + n)]))
                }
                pos += n
            }
        }
    }

    public func flush() throws {
        try raw?.flush()
    }

    /// Writes the log replayed in memory into the file and marks the log empty (LogGuid = 0) by two
    /// header updates [SPEC:497-524]. Needs a writable open. Returns false when there was nothing to do.
    @discardableResult
    public func repair() throws -> Bool {
        guard isWritable, let raw else { throw BlockSourceError.readOnly(path ?? "VHDX source") }
        return try writeLock.withLock {
            guard let replayed = state.withLock({ $0.view }) as? VHDXReplayedSource, state.withLock({ $0.logPending }) else { return false }
            try replayed.writeBack(to: raw)
            try raw.flush()
            try updateHeaders(raw) { $0.logGuid = .zero }
            state.withLock { $0.view = raw; $0.logPending = false }
            return true
        }
    }

    /// New session GUIDs, derived from the current header (which includes its sequence number), so
    /// the same file written the same way gets the same GUIDs: no clock, no RNG.
    private func beginSessionIfNeeded(_ raw: RawFile) throws {
        guard !state.withLock({ $0.sessionStarted }) else { return }
        let seed = header.serialize()
        try updateHeaders(raw) {
            $0.fileWriteGuid = GUID.derived(seed: seed, label: "FileWriteGuid")
            $0.dataWriteGuid = GUID.derived(seed: seed, label: "DataWriteGuid")
        }
        state.withLock { $0.sessionStarted = true }
    }

    /// [SPEC:291-305]: write the changed header with SequenceNumber+1 over the non-current slot,
    /// flush, then again (+2) over the other slot, so both are valid and the newest is current.
    func updateHeaders(_ raw: RawFile, _ change: (inout VHDXHeader) -> Void) throws {
        var (h, slot) = state.withLock { ($0.header, $0.headerSlot) }
        change(&h)
        let offsets = [VHDX.header1Offset, VHDX.header2Offset]
        for step in 1...2 {
            h.sequenceNumber += 1
            slot = 1 - slot
            try raw.write(at: offsets[slot], h.serialize())
            try raw.flush()
            _ = step
        }
        let final = h, finalSlot = slot
        state.withLock { $0.header = final; $0.headerSlot = finalSlot }
    }

    private func setBAT(_ raw: RawFile, index: Int, entry: UInt64) throws {
        var b: [UInt8] = []
        b.appendLE64(entry)
        try raw.write(at: batOffset + UInt64(index) * 8, b)
        try raw.flush()
        state.withLock { $0.bat[index] = entry }
    }

    private func allocate(_ raw: RawFile, length: UInt64) throws -> UInt64 {
        let off = state.withLock { s -> UInt64 in
            let o = VHDX.roundUp(max(s.nextFree, raw.size), to: VHDX.mib)
            s.nextFree = o + length
            return o
        }
        // Extending the file zero-fills the block (sparse), so unwritten parts read as zeros.
        if raw.size < off + length { try raw.truncate(to: off + length) }
        return off
    }

    /// The chunk's sector bitmap block, allocated (zeroed) when missing.
    private func sectorBitmap(_ raw: RawFile, chunk c: UInt64) throws -> UInt64 {
        let i = Int(geometry.sectorBitmapIndex(c))
        let e = state.withLock { $0.bat[i] }
        if VHDX.batState(e) == VHDX.sbBlockPresent { return VHDX.batOffset(e) }
        let off = try allocate(raw, length: VHDX.mib)
        try raw.flush()
        try setBAT(raw, index: i, entry: VHDX.batEntry(state: VHDX.sbBlockPresent, fileOffset: off))
        return off
    }

    /// Sets (or replaces) the bitmap bits of `sectors` within block `p`.
    private func setBits(_ raw: RawFile, block p: UInt64, sectors: Range<UInt64>, fresh: Bool) throws {
        let sb = try sectorBitmap(raw, chunk: p / geometry.chunkRatio)
        let perBlock = UInt64(metadata.blockSize) / UInt64(metadata.logicalSectorSize)
        let base = sb + (p % geometry.chunkRatio) * (perBlock / 8)
        let first = fresh ? 0 : sectors.lowerBound / 8
        let last = fresh ? perBlock / 8 - 1 : (sectors.upperBound - 1) / 8
        var bits = fresh ? [UInt8](repeating: 0, count: Int(last - first + 1))
                         : try raw.read(at: base + first, count: Int(last - first + 1))
        for s in sectors { bits[Int(s / 8 - first)] |= 1 << (s % 8) }
        try raw.write(at: base + first, bits)
    }

    private func writeBlock(_ raw: RawFile, block p: UInt64, inBlock: UInt64, bytes: UnsafeRawBufferPointer) throws {
        let idx = Int(geometry.payloadIndex(p))
        let entry = state.withLock { $0.bat[idx] }
        let bs = UInt64(metadata.blockSize)
        let lss = UInt64(metadata.logicalSectorSize)
        let blockLen = min(bs, metadata.virtualSize - p * bs)
        let sectors = (inBlock / lss)..<((inBlock + UInt64(bytes.count)) / lss)
        let diff = metadata.hasParent
        switch VHDX.batState(entry) {
        case 6:
            try raw.write(at: VHDX.batOffset(entry) + inBlock, from: bytes)
        case 7:
            try raw.write(at: VHDX.batOffset(entry) + inBlock, from: bytes)
            try raw.flush()
            try setBits(raw, block: p, sectors: sectors, fresh: false)
            try raw.flush()
        default:
            let inherits = diff && VHDX.batState(entry) == 0
            let whole = inBlock == 0 && UInt64(bytes.count) >= blockLen
            let off = try allocate(raw, length: bs)
            try raw.write(at: off + inBlock, from: bytes)
            if inherits && !whole {
                // Sub-block ownership: PARTIALLY_PRESENT + this block's bitmap written fresh, so
                // stale bits from an earlier, unreferenced allocation never leak in.
                try setBits(raw, block: p, sectors: sectors, fresh: true)
                try raw.flush()
                try setBAT(raw, index: idx, entry: VHDX.batEntry(state: 7, fileOffset: off))
            } else {
                // FULLY_PRESENT. In a child, its bits are set too (libvhdi reads them, notes §9b).
                if diff { try setBits(raw, block: p, sectors: 0..<(bs / lss), fresh: true) }
                try raw.flush()
                try setBAT(raw, index: idx, entry: VHDX.batEntry(state: 6, fileOffset: off))
            }
        }
    }
}
