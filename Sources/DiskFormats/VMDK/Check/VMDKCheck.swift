import BlockCore

/// `check` for VMDK, in the spirit of `qemu-img check` (which looks only for grain table entries
/// past the end of the file) and stricter: the header; the embedded descriptor against the header
/// (extent size, type, createType, CID, adapter type); the grain directory and the redundant one
/// inside the file; every grain table inside the file, clear of the metadata, not shared or
/// overlapping (loops); each primary table equal to its redundant copy; every grain inside the
/// file, past the metadata and used once (overlapping grains); stream-optimized grain markers
/// naming their own grain. Every finding names its structure and file offset.
public enum VMDKCheck {
    public typealias CannotCheck = CannotCheckError

    /// Checks the file at `path` (a sparse extent, or a descriptor file and its extents). Throws
    /// `CannotCheck`/`IOError` when it is not a VMDK at all or cannot be read.
    public static func run(path: String) throws -> CheckReport {
        let f = try RawFile(path: path)
        let head = try f.read(at: 0, count: Int(min(f.size, 512)))
        if head.starts(with: VMDK.magic) { return try run(source: f, path: path) }
        guard head.starts(with: Array(VMDK.descriptorSignature.utf8)) else {
            throw CannotCheck(reason: "not a VMDK file (neither \"KDMV\" nor \"\(VMDK.descriptorSignature)\")")
        }
        var findings: [CheckFinding] = []
        do {
            let file = try VMDKFile.open(path: path)
            for p in file.pieces {
                if case let .sparse(x) = p.piece {
                    var c = Checker(source: x.file, name: x.name + ": ")
                    c.run()
                    findings += c.findings
                }
            }
        } catch let e as FormatError {
            findings.append(CheckFinding(e))
        }
        return CheckReport(path: path, format: VMDK.formatName, findings: findings)
    }

    /// Checks a sparse extent held by any source.
    public static func run(source: any BlockSource, path: String? = nil) throws -> CheckReport {
        guard source.size >= 4, try source.read(at: 0, count: 4) == VMDK.magic else {
            throw CannotCheck(reason: "not a VMDK sparse extent (no \"KDMV\" magic)")
        }
        var c = Checker(source: source, name: "")
        c.run()
        return CheckReport(path: path ?? "<source>", format: VMDK.formatName, findings: c.findings)
    }

    struct Checker {
        let source: any BlockSource
        let name: String
        var findings: [CheckFinding] = []

        mutating func add(_ structure: String, _ offset: UInt64, _ message: String, _ severity: CheckFinding.Severity = .corruption) {
            findings.append(CheckFinding(structure: name + structure, offset: offset, message: message, severity: severity))
        }

        func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

        mutating func run() {
            do { try checkAll() } catch let e as FormatError {
                findings.append(CheckFinding(structure: name + e.structure, offset: e.offset, message: e.reason))
            } catch {
                add("file", 0, "read failed: \(error)")
            }
        }

        mutating func checkAll() throws {
            let size = source.size
            let h0 = try VMDKSparseHeader.parse(try source.read(at: 0, count: min(512, Int(size))), at: 0)
            if h0.uncleanShutdown != 0 { add("sparse header", 72, "uncleanShutdown is set: the file was not closed cleanly", .warning) }
            // The whole structure must open (footer, directory bounds, table loops and overlaps).
            let x: VMDKSparseExtent
            do { x = try VMDKSparseExtent(file: source) } catch let e as FormatError {
                findings.append(CheckFinding(structure: name + e.structure, offset: e.offset, message: e.reason))
                return
            }
            let h = x.header
            checkDescriptor(x)

            let gtBytes = UInt64(h.numGTEsPerGT) * 4
            let gdStart = h.gdOffset * 512
            // Metadata ranges grains may not touch.
            var meta: [(UInt64, UInt64, String)] = [(0, 512, "the header"), (gdStart, gdStart + UInt64(x.directory.count) * 4, "the grain directory")]
            if x.descriptor != nil { meta.append((x.descriptorRange.lowerBound, x.descriptorRange.upperBound, "the descriptor")) }
            for (i, s) in x.directory.enumerated() where s != 0 { meta.append((UInt64(s) * 512, UInt64(s) * 512 + gtBytes, "grain table \(i)")) }

            // Redundant directory and tables: inside the file, equal to the primary ones.
            if h.hasRedundantGrainTable && !h.hasMarkers {
                let (rgdStart, over) = h.rgdOffset.multipliedReportingOverflow(by: 512)
                let n = x.directory.count
                if h.rgdOffset == 0 || over || rgdStart >= size || UInt64(n) * 4 > size - rgdStart {
                    add("redundant grain directory", 48, "redundant grain directory at sector \(h.rgdOffset) is not inside the file")
                } else {
                    meta.append((rgdStart, rgdStart + UInt64(n) * 4, "the redundant grain directory"))
                    let raw = try source.read(at: rgdStart, count: n * 4)
                    var rgtSeen: [UInt64: Int] = [:]
                    for i in 0..<n {
                        let rs = UInt64(raw.le32(i * 4)), ps = x.directory[i]
                        let at = rgdStart + UInt64(i) * 4
                        if (rs == 0) != (ps == 0) {
                            add("redundant grain directory entry \(i)", at, "redundant table \(rs == 0 ? "missing" : "present") where the primary is \(ps == 0 ? "missing" : "present")")
                            continue
                        }
                        guard rs != 0 else { continue }
                        guard rs * 512 + gtBytes <= size else {
                            add("redundant grain directory entry \(i)", at, "redundant grain table at sector \(rs) runs past the end of the file")
                            continue
                        }
                        if let j = rgtSeen[rs] { add("redundant grain directory entry \(i)", at, "redundant grain table at sector \(rs) is also entry \(j)'s (a loop)") }
                        rgtSeen[rs] = i
                        meta.append((rs * 512, rs * 512 + gtBytes, "redundant grain table \(i)"))
                        let rt = try source.read(at: rs * 512, count: Int(gtBytes))
                        let pt = try source.read(at: UInt64(ps) * 512, count: Int(gtBytes))
                        if rt != pt {
                            let k = zip(rt, pt).enumerated().first { $0.element.0 != $0.element.1 }!.offset / 4
                            add("grain table \(i)", UInt64(ps) * 512 + UInt64(k) * 4,
                                "entry \(k) is \(pt.le32(k * 4)), its redundant copy at \(hex(rs * 512 + UInt64(k) * 4)) says \(rt.le32(k * 4))")
                        }
                    }
                }
            }

            // Grains: inside the file, past the metadata, each used once.
            var seen: [UInt32: UInt64] = [:]
            var grains: [(UInt64, UInt64, UInt64)] = []  // start, end, grain
            let per = UInt64(h.numGTEsPerGT)
            for (i, s) in x.directory.enumerated() where s != 0 {
                guard let t = try x.table(i) else { continue }
                for (k, e) in t.enumerated() where e > 1 || (e == 1 && !h.zeroedGrainGTE) {
                    let g = UInt64(i) * per + UInt64(k)
                    let at = UInt64(s) * 512 + UInt64(k) * 4
                    if g >= h.grainCount { add("grain table \(i)", at, "entry \(k) (grain \(g)) is past the disk's \(h.grainCount) grains but holds \(e)"); continue }
                    let start = UInt64(e) * 512
                    var end = start + x.grainBytes
                    if h.isCompressed {
                        guard start + 12 <= size else { add("grain table \(i)", at, "entry \(k): compressed grain \(g) at sector \(e) is past the end of the file (\(hex(size)))"); continue }
                        if h.hasMarkers {
                            let m = try source.read(at: start, count: 12)
                            end = start + 12 + UInt64(m.le32(8))
                            if m.le64(0) != g * h.grainSize { add("grain marker", start, "grain \(g)'s marker names sector \(m.le64(0)), not \(g * h.grainSize)") }
                            if end > size { add("grain marker", start + 8, "compressed grain \(g) of \(m.le32(8)) bytes runs past the end of the file") }
                        } else {
                            end = start + 512
                        }
                    } else if end > size {
                        add("grain table \(i)", at, "entry \(k): grain \(g) at \(hex(start))-\(hex(end)) points past the end of the file (\(hex(size)))")
                        continue
                    }
                    if let other = seen[e] { add("grain table \(i)", at, "entry \(k): grain \(g) shares sector \(e) with grain \(other)"); continue }
                    seen[e] = g
                    if UInt64(e) < h.overhead && !h.hasMarkers {
                        add("grain table \(i)", at, "entry \(k): grain \(g) at sector \(e) lies inside the metadata (overHead \(h.overhead))")
                    }
                    for (lo, hi, what) in meta where start < hi && lo < end {
                        add("grain table \(i)", at, "entry \(k): grain \(g) at \(hex(start))-\(hex(end)) overlaps \(what)")
                    }
                    grains.append((start, end, g))
                }
            }
            grains.sort { $0.0 < $1.0 }
            for j in grains.indices.dropFirst() where grains[j].0 < grains[j - 1].1 && grains[j].0 != grains[j - 1].0 {
                add("grain \(grains[j].2)", grains[j].0, "overlaps grain \(grains[j - 1].2) at \(hex(grains[j - 1].0))")
            }
        }

        mutating func checkDescriptor(_ x: VMDKSparseExtent) {
            let h = x.header
            guard let d = x.descriptor else {
                if name.isEmpty { add("descriptor", 28, "a monolithic file without an embedded descriptor") }
                return
            }
            let at = x.descriptorRange.lowerBound
            let known = ["monolithicSparse", "streamOptimized", "twoGbMaxExtentSparse", "vmfsSparse"]
            if name.isEmpty {
                if let t = d.createType {
                    if !known.contains(t) { add("descriptor", at, "createType \"\(t)\" is not a sparse type") }
                    if t == "streamOptimized" && !h.isCompressed { add("descriptor", at, "createType streamOptimized but the header has no compressed-grain flag") }
                } else { add("descriptor", at, "no createType") }
                if d.extents.count != 1 {
                    add("descriptor", at, "\(d.extents.count) extent lines; a monolithic file has one")
                } else if let e = d.extents.first {
                    if e.type != "SPARSE" { add("descriptor", at, "extent type \(e.type), expected SPARSE") }
                    if e.sectors != h.capacity { add("descriptor", at, "extent of \(e.sectors) sectors, the header's capacity is \(h.capacity)") }
                }
            }
            if name.isEmpty, d.value("CID").map({ UInt32($0, radix: 16) == nil }) ?? true { add("descriptor", at, "CID \"\(d.value("CID") ?? "")\" is missing or not 8 hex digits") }
            if let a = d.ddbValue("ddb.adapterType"), !VMDK.adapterTypes.contains(a) {
                add("descriptor", at, "ddb.adapterType \"\(a)\" is not one of \(VMDK.adapterTypes.joined(separator: ", "))", .warning)
            }
        }
    }
}
