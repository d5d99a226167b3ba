import BlockCore

/// `check` for VHD. `qemu-img check` does not support the vpc format at all ("This image format
/// does not support checks", exit 63), so this is the only structural check there is; QEMU only
/// refuses to open a file whose footer copy at 0 (dynamic) or footer at the end (fixed) has a
/// bad checksum. Every finding names its structure and offset.
public enum VHDCheck {
    public typealias CannotCheck = CannotCheckError

    public static func run(path: String) throws -> CheckReport {
        try run(source: try RawFile(path: path), path: path)
    }

    public static func run(source: any BlockSource, path: String? = nil) throws -> CheckReport {
        var c = Checker(source: source)
        try c.run()
        return CheckReport(path: path ?? "<source>", format: VHD.formatName, findings: c.findings)
    }

    struct Checker {
        static let maxListed = 100
        /// Problems after which a table is not examined further (a table this damaged is garbage).
        static let stopAfter = 10_000
        let source: any BlockSource
        var findings: [CheckFinding] = []

        mutating func add(_ structure: String, _ offset: UInt64, _ message: String, _ severity: CheckFinding.Severity = .corruption) {
            findings.append(CheckFinding(structure: structure, offset: offset, message: message, severity: severity))
        }

        mutating func run() throws {
            let fs = source.size
            guard fs >= UInt64(VHD.footerSize) else { throw CannotCheck(reason: "not a VHD file: \(fs) bytes is below one footer") }
            let tailAt = fs - UInt64(VHD.footerSize)
            let tail = try? VHDFooter.parse(try source.read(at: tailAt, count: VHD.footerSize), at: tailAt)
            let head = try? VHDFooter.parse(try source.read(at: 0, count: VHD.footerSize), at: 0, name: "footer copy")
            guard tail != nil || head != nil else { throw CannotCheck(reason: "not a VHD file (no 'conectix' footer at the end or at 0)") }

            if let t = tail, !t.checksumIsValid {
                add("footer", tailAt + 64, "checksum \(VHD.hex32(t.checksum)) does not match computed \(VHD.hex32(t.computedChecksum))")
            }
            if tail == nil { add("footer", tailAt, "no 'conectix' footer in the last 512 bytes (truncated or damaged)") }
            // The copy at 0 belongs to dynamic and differencing disks (and is what QEMU reads).
            let type = (tail?.checksumIsValid == true ? tail : nil)?.diskType ?? head?.diskType
            if type == .dynamic || type == .differencing {
                if let h = head, tailAt > 0 {
                    if !h.checksumIsValid {
                        add("footer copy", 64, "checksum \(VHD.hex32(h.checksum)) does not match computed \(VHD.hex32(h.computedChecksum))")
                    }
                    if let t = tail, t != h {
                        add("footer copy", 0, "differs from the footer at \(VHD.hex(tailAt))")
                    }
                } else {
                    add("footer copy", 0, "a dynamic disk must start with a copy of its footer")
                }
            }
            guard let f = (tail?.checksumIsValid == true ? tail : nil) ?? (head?.checksumIsValid == true ? head : nil) ?? tail ?? head else { return }
            let fAt = f == tail ? tailAt : 0
            let name = fAt == 0 ? "footer copy" : "footer"

            if f.features & 2 == 0 { add(name, fAt + 8, "features \(VHD.hex32(f.features)) lack the reserved bit 0x2 that must always be set") }
            if f.formatVersion != 0x0001_0000 { add(name, fAt + 12, "file format version \(VHD.hex32(f.formatVersion)) is not 0x00010000") }
            if f.currentSize % VHD.sector != 0 { add(name, fAt + 48, "current size \(f.currentSize) is not a multiple of 512") }
            if !f.reservedIsZero && VHDSidecarTag.digest(in: f.reserved) == nil { add(name, fAt + 85, "reserved bytes are not zero", .warning) }
            let g = VHDGeometry.forSize(f.currentSize)
            if f.geometry != g {
                add(name, fAt + 56, "geometry \(f.geometry) is not the spec's \(g) for \(f.currentSize) bytes", .warning)
            }
            if f.geometry.sectors * VHD.sector != f.currentSize && f.geometry.sectors != VHD.maxGeometrySectors
                && !["win ", "qem2", "d2v ", "CTXS"].contains(VHD.fourCC(f.creatorApp)) && f.creatorApp != [0x74, 0x61, 0x70, 0] {
                add(name, fAt + 28, "creator \"\(VHD.fourCC(f.creatorApp))\": QEMU takes the size from the geometry (\(f.geometry.sectors * VHD.sector) bytes), not the current size (\(f.currentSize))", .warning)
            }

            switch f.diskType {
            case .none:
                add(name, fAt + 60, "disk type \(f.diskTypeRaw) is not fixed (2), dynamic (3) or differencing (4)")
            case .fixed:
                if f.dataOffset != .max { add(name, fAt + 16, "fixed disk's data offset \(VHD.hex(f.dataOffset)) is not all ones", .warning) }
                if fs != f.currentSize + 512 {
                    add("file", 0, "fixed disk of current size \(f.currentSize) must be \(f.currentSize + 512) bytes, the file has \(fs)")
                }
                if f.currentSize % VHD.mib != 0 {
                    add(name, fAt + 48, "current size \(f.currentSize) is not a whole number of MiB: Azure refuses such a VHD", .warning)
                }
            case .dynamic, .differencing:
                try checkDynamic(f, footerAt: fAt, fileSize: fs)
            }
        }

        mutating func checkDynamic(_ f: VHDFooter, footerAt: UInt64, fileSize fs: UInt64) throws {
            let ho = f.dataOffset
            guard ho <= fs, UInt64(VHD.dynamicHeaderSize) <= fs - ho else {
                add("footer", footerAt + 16, "data offset \(VHD.hex(ho)) puts the dynamic disk header past the end of the file (\(VHD.hex(fs)))")
                return
            }
            let h: VHDDynamicHeader
            do {
                h = try VHDDynamicHeader.parse(try source.read(at: ho, count: VHD.dynamicHeaderSize), at: ho)
            } catch let e as FormatError {
                findings.append(CheckFinding(e))
                return
            }
            if !h.checksumIsValid { add("dynamic disk header", ho + 36, "checksum \(VHD.hex32(h.checksum)) does not match computed \(VHD.hex32(h.computedChecksum))") }
            if h.dataOffset != .max { add("dynamic disk header", ho + 8, "data offset \(VHD.hex(h.dataOffset)) is not all ones", .warning) }
            if h.headerVersion != 0x0001_0000 { add("dynamic disk header", ho + 24, "header version \(VHD.hex32(h.headerVersion)) is not 0x00010000") }
            if f.diskType == .differencing {
                add("dynamic disk header", ho, "differencing disk (parent \"\(h.parentNameText)\"): its blocks were checked, its parent was not", .warning)
            }
            let bs = UInt64(h.blockSize)
            guard bs >= VHD.sector, bs % VHD.sector == 0, bs <= 256 << 20 else {
                add("dynamic disk header", ho + 32, "block size \(h.blockSize) is not a multiple of 512 between 512 and 256 MiB")
                return
            }
            if h.blockSize.nonzeroBitCount != 1 { add("dynamic disk header", ho + 32, "block size \(h.blockSize) is not a power of two: QEMU refuses it", .warning) }
            let needed = (f.currentSize + bs - 1) / bs
            if needed > UInt64(h.maxTableEntries) {
                add("dynamic disk header", ho + 28, "max table entries \(h.maxTableEntries) cannot map \(f.currentSize) bytes (\(needed) blocks)")
            }
            let batBytes = UInt64(h.maxTableEntries) * 4
            guard h.tableOffset <= fs, batBytes <= fs - h.tableOffset else {
                add("dynamic disk header", ho + 16, "BAT of \(h.maxTableEntries) entries at \(VHD.hex(h.tableOffset)) extends past the end of the file (\(VHD.hex(fs)))")
                return
            }
            let batEnd = h.tableOffset + (batBytes + 511) / 512 * 512
            let tailStart = fs - UInt64(VHD.footerSize)
            var fixed: [(start: UInt64, end: UInt64, name: String)] = [
                (0, UInt64(VHD.footerSize), "the footer copy"), (ho, ho + UInt64(VHD.dynamicHeaderSize), "the dynamic disk header"),
                (h.tableOffset, batEnd, "the BAT"), (tailStart, fs, "the footer"),
            ]
            fixed.sort { $0.start < $1.start }
            for (a, b) in zip(fixed, fixed.dropFirst()) where b.start < a.end {
                add(b.name == "the footer" ? "footer" : "dynamic disk header", b.start, "\(b.name) overlaps \(a.name)")
            }
            // Entries past the last block are looked at too (they must be unallocated), up to a
            // fixed bound: a damaged max table entries never makes us load the whole file.
            let examined = min(UInt64(h.maxTableEntries), VHD.maxTableEntries)
            if examined < UInt64(h.maxTableEntries) {
                add("dynamic disk header", ho + 28, "max table entries \(h.maxTableEntries) exceeds the \(VHD.maxTableEntries) BootLab reads")
            }
            let bat = try source.read(at: h.tableOffset, count: Int(examined * 4))
            let bm = (bs / VHD.sector / 8 + 511) / 512 * 512
            var blocks: [(start: UInt64, end: UInt64, index: Int)] = []
            // A damaged table can be wrong everywhere: the first 100 problems are listed, the
            // rest counted (a million findings would cost more than the check).
            var listed = 0
            func entry(_ structure: String, _ offset: UInt64, _ message: @autoclosure () -> String) {
                listed += 1
                if listed <= Self.maxListed { add(structure, offset, message()) }
            }
            for p in 0..<Int(examined) {
                if listed >= Self.stopAfter { break }
                let e = VHD.be32(bat, p * 4)
                guard e != VHD.unallocated else { continue }
                let at = h.tableOffset + UInt64(p) * 4
                if UInt64(p) >= needed {
                    entry("BAT entry \(p)", at, "entry past the last block (\(needed)) is allocated (\(VHD.hex32(e)))")
                    continue
                }
                let off = UInt64(e) * VHD.sector, end = off + bm + bs
                if end > tailStart {
                    entry("BAT entry \(p)", at, "block at \(VHD.hex(off))-\(VHD.hex(end)) extends past the footer at \(VHD.hex(tailStart))")
                    continue
                }
                for s in fixed where off < s.end && s.start < end {
                    entry("BAT entry \(p)", at, "block at \(VHD.hex(off))-\(VHD.hex(end)) overlaps \(s.name)")
                }
                blocks.append((off, end, p))
            }
            blocks.sort { $0.start < $1.start }
            for k in blocks.indices.dropFirst() where blocks[k].start < blocks[k - 1].end {
                entry("BAT entry \(blocks[k].index)", h.tableOffset + UInt64(blocks[k].index) * 4,
                    "block at \(VHD.hex(blocks[k].start)) overlaps the block of BAT entry \(blocks[k - 1].index)")
            }
            if listed > Self.maxListed {
                add("BAT", h.tableOffset, "\(listed - Self.maxListed) more BAT entry problems not listed" + (listed >= Self.stopAfter ? "; the BAT was not examined past \(Self.stopAfter) problems" : ""))
            }
        }
    }
}
