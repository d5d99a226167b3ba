import BlockCore

/// `check` for VDI: the header's fields and every block map entry. `qemu-img check -f vdi`
/// checks only the block map (an index ≥ blocks in image, an index used twice, the allocated
/// count); this adds the header rules, slots past the end of the file and overlaps.
public enum VDICheck {
    public typealias CannotCheck = CannotCheckError

    public static func run(path: String) throws -> CheckReport {
        try run(source: try RawFile(path: path), path: path)
    }

    public static func run(source: any BlockSource, path: String? = nil) throws -> CheckReport {
        var c = Checker(source: source)
        try c.run()
        return CheckReport(path: path ?? "<source>", format: VDI.formatName, findings: c.findings)
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
            guard fs >= 0x48, try source.read(at: 0x40, count: 4).le32(0) == VDI.signature else {
                throw CannotCheck(reason: "not a VDI file (no signature 0xbeda107f at 0x40)")
            }
            guard fs >= UInt64(VDI.headerAreaSize) else {
                add("file", 0, "file size \(fs) is below the 512-byte header: truncated")
                return
            }
            let h: VDIHeader
            do { h = try VDIHeader.parse(try source.read(at: 0, count: VDI.headerAreaSize)) } catch let e as FormatError {
                findings.append(CheckFinding(e))
                return
            }
            if !h.textString.hasPrefix("<<< ") { add("header", 0, "pre-header text \(h.textString.debugDescription) is not VirtualBox's", .warning) }
            if h.headerSize != 0x190 && h.headerSize != 0x180 {
                add("header", 0x48, "header size \(VDI.hex(UInt64(h.headerSize))) is neither VirtualBox's 0x190 nor QEMU's 0x180")
            }
            switch h.imageType {
            case .normal?, .fixed?:
                if !h.linkUUID.isZero { add("header", 0x1A8, "link UUID is set in a base image") }
                if !h.parentModificationUUID.isZero { add("header", 0x1B8, "parent modification UUID is set in a base image") }
            case .undo?, .diff?:
                add("header", 0x4C, "\(h.imageType!.name) image: its parent was not checked", .warning)
            case nil:
                add("header", 0x4C, "image type \(h.imageTypeRaw) is not 1–4")
            }
            if h.legacyGeometry[3] != 512 { add("header", 0x168, "sector size \(h.legacyGeometry[3]) is not 512 (QEMU refuses it)") }
            if h.diskSize % VDI.sector != 0 { add("header", 0x170, "disk size \(h.diskSize) is not a multiple of 512 (QEMU rounds it up)", .warning) }
            let bs = UInt64(h.blockSize), extra = UInt64(h.blockExtra)
            guard bs >= VDI.sector, bs % VDI.sector == 0, bs <= 256 << 20, extra <= 1 << 20 else {
                add("header", 0x178, "block size \(h.blockSize) (+\(h.blockExtra) extra) is not a multiple of 512 between 512 and 256 MiB")
                return
            }
            if bs != VDI.mib { add("header", 0x178, "block size \(bs) is not 1 MiB: QEMU cannot open it", .warning) }
            if h.diskSize > UInt64(h.blocksInImage) * bs {
                add("header", 0x170, "disk size \(h.diskSize) exceeds \(h.blocksInImage) blocks of \(bs) bytes")
            }
            let mapAt = UInt64(h.blockMapOffset), dataAt = UInt64(h.dataOffset)
            if mapAt % VDI.sector != 0 { add("header", 0x154, "block map offset \(VDI.hex(mapAt)) is not sector aligned") }
            if dataAt % VDI.sector != 0 { add("header", 0x158, "data offset \(VDI.hex(dataAt)) is not sector aligned") }
            let mapBytes = UInt64(h.blocksInImage) * 4
            guard mapAt >= UInt64(VDI.headerAreaSize), mapAt <= fs, mapBytes <= fs - mapAt else {
                add("header", 0x154, "block map of \(h.blocksInImage) entries at \(VDI.hex(mapAt)) lies outside the file (size \(VDI.hex(fs)))")
                return
            }
            if dataAt < mapAt + mapBytes { add("header", 0x158, "data offset \(VDI.hex(dataAt)) lies inside the block map (\(VDI.hex(mapAt))-\(VDI.hex(mapAt + mapBytes)))") }
            if h.blocksAllocated > h.blocksInImage {
                add("header", 0x184, "\(h.blocksAllocated) blocks allocated of \(h.blocksInImage)")
            }
            guard UInt64(h.blocksInImage) <= VDI.maxBlocks else {
                add("header", 0x180, "\(h.blocksInImage) blocks exceed the \(VDI.maxBlocks) BootLab reads")
                return
            }
            let map = try source.read(at: mapAt, count: Int(mapBytes))
            // A damaged map can be wrong everywhere: the first 100 problems are listed, the rest
            // counted.
            var listed = 0
            func entry(_ structure: String, _ offset: UInt64, _ message: @autoclosure () -> String) {
                listed += 1
                if listed <= Self.maxListed { add(structure, offset, message()) }
            }
            var owner: [UInt32: Int] = [:]
            var allocated: UInt32 = 0
            let slot = bs + extra
            for p in 0..<Int(h.blocksInImage) {
                if listed >= Self.stopAfter { break }
                let e = map.le32(p * 4)
                guard VDI.isAllocated(e) else { continue }
                let at = mapAt + UInt64(p) * 4
                allocated &+= 1
                if e >= h.blocksInImage {
                    entry("block map entry \(p)", at, "slot \(e) is not below the \(h.blocksInImage) blocks in the image")
                    continue
                }
                if let first = owner[e] {
                    entry("block map entry \(p)", at, "slot \(e) is also used by block \(first)")
                    continue
                }
                owner[e] = p
                let off = dataAt + UInt64(e) * slot
                if off + slot > fs {
                    entry("block map entry \(p)", at, "slot \(e) at \(VDI.hex(off))-\(VDI.hex(off + slot)) extends past the end of the file (\(VDI.hex(fs)))")
                }
            }
            if listed > Self.maxListed {
                add("block map", mapAt, "\(listed - Self.maxListed) more block map entry problems not listed" + (listed >= Self.stopAfter ? "; the map was not examined past \(Self.stopAfter) problems" : ""))
            }
            if allocated != h.blocksAllocated {
                add("header", 0x184, "header says \(h.blocksAllocated) blocks allocated, the block map has \(allocated)")
            }
        }
    }
}
