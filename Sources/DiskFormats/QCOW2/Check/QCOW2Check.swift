import BlockCore

/// `check` for qcow2, in the spirit of `qemu-img check`: every cluster the image references
/// (header, L1, refcount table and blocks, L2 tables, data and compressed clusters, the snapshot
/// table and each snapshot's L1/L2 tables) is counted, and the counts are compared with the
/// stored refcounts. A stored refcount below the references is corruption; above it (and no
/// reference at all) is a leak, reported as a warning as qemu-img reports leaks apart.
/// Entries that are unaligned, past the end of the file or have reserved bits set are
/// corruption; so is a cluster used twice by the active image, and a wrong COPIED flag.
public enum QCOW2Check {
    public typealias CannotCheck = CannotCheckError

    /// At most this many clusters are counted (512 MiB of counters).
    public static let maxClusters: UInt64 = 1 << 28
    /// Findings beyond this many are summarized in one.
    public static let maxFindings = 1000

    public static func run(path: String) throws -> CheckReport {
        try run(source: try RawFile(path: path), path: path)
    }

    public static func run(source: any BlockSource, path: String? = nil) throws -> CheckReport {
        var c = Checker(source: source)
        try c.run()
        if c.dropped > 0 {
            c.findings.append(CheckFinding(structure: "check", offset: 0, message: "\(c.dropped) more findings not listed"))
        }
        return CheckReport(path: path ?? "<source>", format: QCOW2.formatName, findings: c.findings)
    }

    struct Checker {
        let source: any BlockSource
        var findings: [CheckFinding] = []
        var dropped = 0
        var refs: [UInt16] = []
        /// References other than compressed clusters' (which legitimately share host clusters).
        var plainRefs: [UInt8] = []
        /// L2 tables named by L1 entries (active and snapshots), with how many entries name each.
        var l2Uses: [UInt64: Int] = [:]
        var activeL2: Set<UInt64> = []
        var l1Budget = 1 << 24
        var fileClusters: UInt64 = 0
        var header = QCOW2Header()
        var c: UInt64 = 0

        init(source: any BlockSource) { self.source = source }

        mutating func add(_ structure: String, _ offset: UInt64, _ message: String, _ severity: CheckFinding.Severity = .corruption) {
            if findings.count >= QCOW2Check.maxFindings { dropped += 1; return }
            findings.append(CheckFinding(structure: structure, offset: offset, message: message, severity: severity))
        }

        /// Counts one reference to each cluster of [offset, offset+length).
        mutating func ref(_ offset: UInt64, _ length: UInt64, _ what: String, at: UInt64, compressed: Bool = false, times: Int = 1) {
            guard length > 0 else { return }
            let (end, o) = offset.addingReportingOverflow(length)
            guard !o else { add(what, at, "range at \(QCOW2.hex(offset)) overflows"); return }
            let first = offset / c, last = (end - 1) / c
            if last >= fileClusters {
                add(what, at, "\(QCOW2.hex(offset))..<\(QCOW2.hex(end)) lies past the end of the file (\(QCOW2.hex(source.size)))")
            }
            guard first < fileClusters else { return }
            for i in first...min(last, fileClusters - 1) {
                refs[Int(i)] = UInt16(min(Int(refs[Int(i)]) + times, Int(UInt16.max)))
                if !compressed { plainRefs[Int(i)] = UInt8(min(Int(plainRefs[Int(i)]) + times, Int(UInt8.max))) }
            }
        }

        func read(_ at: UInt64, _ n: Int) throws -> [UInt8] {
            guard at < source.size else { return [UInt8](repeating: 0, count: n) }
            var b = try source.read(at: at, count: Int(min(UInt64(n), source.size - at)))
            if b.count < n { b += [UInt8](repeating: 0, count: n - b.count) }
            return b
        }

        mutating func run() throws {
            let size = source.size
            guard size >= 4, try source.read(at: 0, count: 4) == QCOW2.magic else {
                throw CannotCheck(reason: "not a qcow2 file (no QFI\\xfb magic)")
            }
            do {
                header = try QCOW2Header.parse(try source.read(at: 0, count: Int(min(size, 1 << QCOW2.maxClusterBits))))
            } catch let e as FormatError {
                findings.append(CheckFinding(e))
                return
            }
            let h = header
            c = h.clusterSize
            if h.cryptMethod != 0 { throw CannotCheck(reason: "encrypted image (crypt_method \(h.cryptMethod)): not checked") }
            if h.incompatibleFeatures & QCOW2.incompatExternalData != 0 { throw CannotCheck(reason: "external data file: not checked") }
            if h.incompatibleFeatures & QCOW2.incompatExtendedL2 != 0 { throw CannotCheck(reason: "extended L2 entries: not checked") }
            if h.incompatibleFeatures & ~QCOW2.knownIncompatible != 0 {
                add("header", 72, "unknown incompatible feature bits 0x\(String(h.incompatibleFeatures & ~QCOW2.knownIncompatible, radix: 16))")
            }
            if h.incompatibleFeatures & QCOW2.incompatCorrupt != 0 { add("header", 72, "the corrupt bit is set") }
            if h.incompatibleFeatures & QCOW2.incompatDirty != 0 {
                add("header", 72, "the dirty bit is set: refcounts may be stale (lazy refcounts)", .warning)
            }
            if h.version >= 3, h.refcountOrder > 6 { add("header", 96, "refcount_order \(h.refcountOrder) above 6") }
            let problems = h.problems(fileSize: size)
            for (at, why) in problems { add("header", UInt64(at), why) }
            guard problems.isEmpty else { return }
            fileClusters = QCOW2.divRoundUp(size, c)
            guard fileClusters <= QCOW2Check.maxClusters else {
                throw CannotCheck(reason: "\(fileClusters) clusters: above the \(QCOW2Check.maxClusters) this check counts")
            }
            refs = [UInt16](repeating: 0, count: Int(fileClusters))
            plainRefs = [UInt8](repeating: 0, count: Int(fileClusters))

            ref(0, c, "header", at: 0)
            ref(h.refcountTableOffset, UInt64(h.refcountTableClusters) * c, "refcount table", at: 48)
            var active = try walkL1(offset: h.l1TableOffset, count: UInt64(h.l1Size), name: "L1", headerField: 40, active: true)
            try walkSnapshots()
            active += try walkL2Tables()
            try walkBitmaps()

            // Stored refcounts.
            let rtCount = Int(UInt64(h.refcountTableClusters) * c / 8)
            let rt = QCOW2BE.u64s(try read(h.refcountTableOffset, rtCount * 8), count: rtCount)
            var blocks: [(Int, UInt64)] = []
            for (i, e) in rt.enumerated() where e != 0 {
                let at = h.refcountTableOffset + UInt64(i) * 8
                let off = e & QCOW2.offsetMask
                if e & QCOW2.refcountTableReservedMask != 0 { add("refcount table entry \(i)", at, "reserved bits set in \(QCOW2.hex(e))") }
                guard off % c == 0, off != 0 else { add("refcount table entry \(i)", at, "refcount block offset \(QCOW2.hex(off)) is not cluster-aligned"); continue }
                guard off / c < fileClusters else { add("refcount table entry \(i)", at, "refcount block at \(QCOW2.hex(off)) lies past the end of the file"); continue }
                ref(off, c, "refcount block \(i)", at: at)
                blocks.append((i, off))
            }
            let bits = h.refcountBits
            let perBlock = c * 8 / bits
            var stored = [UInt16](repeating: 0, count: Int(fileClusters))
            // Only blocks covering the file's clusters are read (a table whose entries all name
            // one block would otherwise make the check read it a million times).
            let covering = QCOW2.divRoundUp(fileClusters, perBlock)
            for (i, off) in blocks where UInt64(i) < covering {
                let b = try read(off, Int(c))
                for j in 0..<perBlock {
                    let cl = UInt64(i) * perBlock + j
                    let v = Self.refcount(b, index: j, bits: bits)
                    if cl < fileClusters { stored[Int(cl)] = UInt16(min(v, UInt64(UInt16.max))) } else if v != 0 {
                        add("refcount block \(i)", off + j * bits / 8, "cluster \(cl) past the end of the file has refcount \(v)", .warning)
                    }
                }
            }
            for cl in 0..<Int(fileClusters) {
                let r = UInt64(refs[cl]), s = UInt64(stored[cl])
                if r == s { continue }
                let off = UInt64(cl) * c
                if s < r {
                    add("refcount", off, "cluster \(cl) at \(QCOW2.hex(off)): refcount \(s) but \(r) reference(s)")
                } else {
                    add("refcount", off, "cluster \(cl) at \(QCOW2.hex(off)): refcount \(s) but \(r) reference(s) (leaked)", .warning)
                }
            }
            if h.nbSnapshots == 0 {
                for cl in 0..<Int(fileClusters) where plainRefs[cl] > 1 || (plainRefs[cl] == 1 && refs[cl] > 1) {
                    add("cluster \(cl)", UInt64(cl) * c, "used \(refs[cl]) times by the image's structures (overlap)")
                }
            }
            // COPIED must be set exactly where the refcount is 1 (active tables only).
            for (name, at, entry, target) in active {
                let s = target / c < fileClusters ? stored[Int(target / c)] : 0
                let copied = entry & QCOW2.copiedFlag != 0
                if copied && s != 1 { add(name, at, "COPIED set but the refcount of \(QCOW2.hex(target)) is \(s)") }
                if !copied && s == 1 { add(name, at, "COPIED not set although the refcount of \(QCOW2.hex(target)) is 1") }
            }
        }

        static func refcount(_ b: [UInt8], index j: UInt64, bits: UInt64) -> UInt64 {
            switch bits {
            case 64: return QCOW2BE.u64(b, Int(j * 8))
            case 32: return UInt64(QCOW2BE.u32(b, Int(j * 4)))
            case 16: return UInt64(QCOW2BE.u16(b, Int(j * 2)))
            case 8: return UInt64(b[Int(j)])
            default:  // 1, 2, 4 bits, least significant first within a byte
                let bit = j * bits
                return UInt64(b[Int(bit / 8)] >> UInt8(bit % 8)) & ((1 << bits) - 1)
            }
        }

        /// Counts an L1 table and the references to its L2 tables; the L2 tables themselves are
        /// walked once each afterwards (`walkL2Tables`), however many L1 entries name them, so a
        /// hostile file cannot make the check read one table millions of times. Returns (entry
        /// name, entry offset, entry, target) for the COPIED check when `active`.
        mutating func walkL1(offset: UInt64, count: UInt64, name: String, headerField: UInt64, active: Bool) throws -> [(String, UInt64, UInt64, UInt64)] {
            var copiedChecks: [(String, UInt64, UInt64, UInt64)] = []
            guard count > 0 else { return [] }
            guard offset % c == 0, count * 8 <= QCOW2.maxL1Bytes, offset < source.size, count * 8 <= source.size - offset else {
                add(name, headerField, "table at \(QCOW2.hex(offset)) with \(count) entries is unaligned or outside the file")
                return []
            }
            l1Budget -= Int(count)
            guard l1Budget >= 0 else { throw CannotCheck(reason: "the L1 tables (active and snapshots) hold more than \(1 << 24) entries in all: not checked") }
            ref(offset, count * 8, "\(name) table", at: headerField)
            let l1 = QCOW2BE.u64s(try read(offset, Int(count) * 8), count: Int(count))
            for (k, e) in l1.enumerated() where e != 0 {
                let at = offset + UInt64(k) * 8
                let l2 = e & QCOW2.offsetMask
                let en = "\(name) entry \(k)"
                if e & QCOW2.l1ReservedMask != 0 { add(en, at, "reserved bits set in \(QCOW2.hex(e))") }
                if l2 == 0 { continue }
                guard l2 % c == 0 else { add(en, at, "L2 table offset \(QCOW2.hex(l2)) is not cluster-aligned"); continue }
                guard l2 / c < fileClusters else { add(en, at, "L2 table at \(QCOW2.hex(l2)) lies past the end of the file"); continue }
                ref(l2, c, "L2 table", at: at)
                l2Uses[l2, default: 0] += 1
                if active {
                    copiedChecks.append((en, at, e, l2))
                    activeL2.insert(l2)
                }
            }
            return copiedChecks
        }

        /// Each distinct L2 table once: its clusters are counted once per L1 entry naming it.
        mutating func walkL2Tables() throws -> [(String, UInt64, UInt64, UInt64)] {
            var copiedChecks: [(String, UInt64, UInt64, UInt64)] = []
            let cb = UInt64(header.clusterBits)
            for (l2, uses) in l2Uses.sorted(by: { $0.key < $1.key }) {
                let active = activeL2.contains(l2)
                let t = QCOW2BE.u64s(try read(l2, Int(c)), count: Int(c / 8))
                for (j, m) in t.enumerated() where m != 0 {
                    let mAt = l2 + UInt64(j) * 8
                    let mn = "L2 entry \(j) of the table at \(QCOW2.hex(l2))"
                    if m & QCOW2.compressedFlag != 0 {
                        let x = 62 - (cb - 8)
                        let off = m & ((1 << x) - 1)
                        let sectors = ((m >> x) & ((1 << (cb - 8)) - 1)) + 1
                        if m & QCOW2.copiedFlag != 0 { add(mn, mAt, "COPIED set on a compressed cluster") }
                        // QEMU counts the 512-byte sectors the entry spans.
                        let lo = off & ~UInt64(511)
                        ref(lo, sectors * 512, mn + " (compressed)", at: mAt, compressed: true, times: uses)
                        continue
                    }
                    if m & QCOW2.l2ReservedMask != 0 { add(mn, mAt, "reserved bits set in \(QCOW2.hex(m))") }
                    if m & QCOW2.zeroFlag != 0 && header.version < 3 { add(mn, mAt, "zero flag in a version 2 image") }
                    let off = m & QCOW2.offsetMask
                    if off == 0 { continue }
                    guard off % c == 0 else { add(mn, mAt, "data cluster offset \(QCOW2.hex(off)) is not cluster-aligned"); continue }
                    ref(off, c, mn, at: mAt, times: uses)
                    if active, off / c < fileClusters { copiedChecks.append((mn, mAt, m, off)) }
                }
            }
            return copiedChecks
        }

        /// Persistent dirty bitmaps (qcow2.txt "Bitmaps extension"): the bitmap directory, each
        /// bitmap table and the clusters its entries name. Only when the autoclear bit 0 says the
        /// extension is valid (QEMU ignores it otherwise).
        mutating func walkBitmaps() throws {
            guard header.autoclearFeatures & 1 != 0,
                  let ext = header.extensions.first(where: { $0.type == QCOW2.extBitmaps }) else { return }
            let x = ext.data
            guard x.count >= 24 else { add("bitmaps extension", ext.offset, "\(x.count) bytes, below 24"); return }
            let nb = QCOW2BE.u32(x, 0), dirSize = QCOW2BE.u64(x, 8), dirOffset = QCOW2BE.u64(x, 16)
            guard nb <= 65535, dirSize <= 64 << 20, dirOffset % c == 0, dirOffset < source.size, dirSize <= source.size - dirOffset else {
                add("bitmaps extension", ext.offset, "\(nb) bitmaps, directory of \(dirSize) bytes at \(QCOW2.hex(dirOffset)): outside the file or above QEMU's limits")
                return
            }
            ref(dirOffset, dirSize, "bitmap directory", at: ext.offset + 16)
            let dir = try read(dirOffset, Int(dirSize))
            var at = 0
            for i in 0..<Int(nb) {
                let en = "bitmap directory entry \(i)"
                guard at + 24 <= dir.count else { add(en, dirOffset + UInt64(at), "runs past the directory"); return }
                let tableOffset = QCOW2BE.u64(dir, at), tableSize = UInt64(QCOW2BE.u32(dir, at + 8))
                let nameSize = Int(QCOW2BE.u16(dir, at + 18)), extra = Int(QCOW2BE.u32(dir, at + 20))
                guard extra <= 1024, nameSize <= 1023 else { add(en, dirOffset + UInt64(at), "name or extra data too long"); return }
                let tAt = dirOffset + UInt64(at)
                at += Int(QCOW2.roundUp(UInt64(24 + extra + nameSize), to: 8))
                guard tableOffset % c == 0, tableSize * 8 <= 64 << 20, tableOffset < source.size, tableSize * 8 <= source.size - tableOffset else {
                    add(en, tAt, "bitmap table at \(QCOW2.hex(tableOffset)) (\(tableSize) entries) unaligned or outside the file")
                    continue
                }
                l1Budget -= Int(tableSize)
                guard l1Budget >= 0 else { throw CannotCheck(reason: "the L1 and bitmap tables hold more than \(1 << 24) entries in all: not checked") }
                ref(tableOffset, tableSize * 8, "bitmap table \(i)", at: tAt)
                let t = QCOW2BE.u64s(try read(tableOffset, Int(tableSize) * 8), count: Int(tableSize))
                for (j, e) in t.enumerated() {
                    let off = e & QCOW2.offsetMask
                    guard off != 0 else { continue }
                    let eAt = tableOffset + UInt64(j) * 8
                    guard off % c == 0 else { add("bitmap table \(i) entry \(j)", eAt, "data offset \(QCOW2.hex(off)) is not cluster-aligned"); continue }
                    ref(off, c, "bitmap table \(i) entry \(j)", at: eAt)
                }
            }
        }

        /// The snapshot table (qcow2.txt "Snapshot table") and each snapshot's L1 and L2 tables.
        mutating func walkSnapshots() throws {
            let h = header
            guard h.nbSnapshots > 0 else { return }
            guard h.nbSnapshots <= 65536 else { add("header", 60, "nb_snapshots \(h.nbSnapshots) above 65536"); return }
            var at = h.snapshotsOffset
            let start = at
            for s in 0..<Int(h.nbSnapshots) {
                guard at < source.size, source.size - at >= 40 else { add("snapshot \(s)", at, "snapshot header lies past the end of the file"); return }
                let b = try read(at, 40)
                let l1Off = QCOW2BE.u64(b, 0), l1Size = UInt64(QCOW2BE.u32(b, 8))
                let idSize = UInt64(QCOW2BE.u16(b, 12)), nameSize = UInt64(QCOW2BE.u16(b, 14))
                let extra = UInt64(QCOW2BE.u32(b, 36))
                guard extra <= 1024 else { add("snapshot \(s)", at + 36, "extra data size \(extra) above 1024"); return }
                _ = try walkL1(offset: l1Off, count: l1Size, name: "snapshot \(s) L1", headerField: at, active: false)
                at = QCOW2.roundUp(at + 40 + extra + idSize + nameSize, to: 8)
            }
            ref(start, at - start, "snapshot table", at: 64)
        }
    }
}
