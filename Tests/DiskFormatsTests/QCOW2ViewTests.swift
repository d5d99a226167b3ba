import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// The synthesized qcow2 (`QCOW2View`) against its own contract and against QEMU and libqcow.
@Suite struct QCOW2ViewStructureTests {
    /// A 6 MiB disk with 1 MiB clusters whose clusters 1 and 4 hold data.
    static func disk(fill: UInt8) -> MemorySource {
        let c = 1 << 20
        var bytes = [UInt8](repeating: 0, count: 6 * c)
        for k in [1, 4] { for i in 0..<c { bytes[k * c + i] = fill &+ UInt8(truncatingIfNeeded: i &* 31 &+ k) } }
        let C = UInt64(c)
        return MemorySource(bytes, zeroRanges: [0..<C, 2 * C..<4 * C, 5 * C..<6 * C])
    }

    @Test func nativeFormatViewContract() throws {
        let o = QCOW2ViewOptions(clusterBits: 20)
        let a = try QCOW2View(source: Self.disk(fill: 1), options: o), b = try QCOW2View(source: Self.disk(fill: 200), options: o)
        let sk = try a.skeleton()
        #expect(UInt64(sk.count) == a.payloadStart)
        #expect(try a.read(at: 0, count: Int(a.payloadStart)) == sk)
        #expect(try b.skeleton() == sk, "the skeleton must not depend on data")
        let disk = Self.disk(fill: 7)
        let v = try QCOW2View(source: disk, options: o)
        let C = Q2.MiB
        for off: UInt64 in [C, C + 4095, 4 * C + 12345, 5 * C - 1] {
            let at = try #require(v.fileOffset(ofVirtual: off))
            #expect(at >= v.payloadStart)
            #expect(try v.read(at: at, count: 1) == disk.read(at: off, count: 1))
        }
        for off: UInt64 in [0, 2 * C + 7, 3 * C, 5 * C, 6 * C, 6 * C + 1] { #expect(v.fileOffset(ofVirtual: off) == nil) }
        #expect(QCOW2View.formatName == "qcow2" && QCOW2View.pointerPlacement == .qcow2HeaderExtension)
        #expect(v.allocationUnit == C)
    }

    /// Cluster placement: header, refcount table, refcount block, L1, L2, data in virtual order;
    /// refcounts 1 for exactly the file's clusters; COPIED on every entry.
    @Test func layoutFollowsTheRecipe() throws {
        let v = try QCOW2View(source: Q2.Sparse(size: 64 * Q2.MiB, dataRanges: [3 * Q2.MiB..<3 * Q2.MiB + 10, 40 * Q2.MiB..<40 * Q2.MiB + 70000]))
        let c: UInt64 = 65536
        let sk = try v.skeleton()
        #expect(Array(sk[0..<4]) == QCOW2.magic)
        #expect(QCOW2BE.u32(sk, 4) == 3 && QCOW2BE.u32(sk, 20) == 16 && QCOW2BE.u64(sk, 24) == 64 * Q2.MiB)
        #expect(QCOW2BE.u32(sk, 96) == 4 && QCOW2BE.u32(sk, 100) == 112)
        #expect(QCOW2BE.u64(sk, 48) == c && QCOW2BE.u32(sk, 56) == 1)          // refcount table at cluster 1
        #expect(QCOW2BE.u64(sk, Int(c)) == 2 * c)                             // one refcount block at cluster 2
        #expect(QCOW2BE.u64(sk, 40) == 3 * c && QCOW2BE.u32(sk, 36) == 1)     // L1 at cluster 3, one entry
        #expect(QCOW2BE.u64(sk, Int(3 * c)) == (4 * c) | QCOW2.copiedFlag)    // L2 at cluster 4
        #expect(v.payloadStart == 5 * c)
        // Data: virtual cluster 48 (3 MiB), then 640 and 641 (40 MiB + 70000 spans two).
        #expect(QCOW2BE.u64(sk, Int(4 * c + 48 * 8)) == (5 * c) | QCOW2.copiedFlag)
        #expect(QCOW2BE.u64(sk, Int(4 * c + 640 * 8)) == (6 * c) | QCOW2.copiedFlag)
        #expect(QCOW2BE.u64(sk, Int(4 * c + 641 * 8)) == (7 * c) | QCOW2.copiedFlag)
        #expect(v.size == 8 * c && v.layout.totalClusters == 8)
        for i in 0..<8 { #expect(QCOW2BE.u16(sk, Int(2 * c) + 2 * i) == 1) }
        #expect(QCOW2BE.u16(sk, Int(2 * c) + 16) == 0)
        #expect(v.layoutDump().contains("clusters 640..<642: data at 0x60000..<0x80000"))
    }

    /// The refcount structures count themselves: with 512-byte clusters one refcount block covers
    /// 256 clusters, so a disk needing ~600 clusters needs several blocks and a bigger table.
    @Test func refcountFixedPoint() throws {
        let src = Q2.Sparse(size: 256 * 1024, dataRanges: [0..<256 * 1024])
        let v = try QCOW2View(source: src, options: QCOW2ViewOptions(clusterBits: 9))
        let l = v.layout
        #expect(l.totalClusters <= l.refcountBlocks * l.refcountsPerBlock)
        #expect(l.refcountBlocks <= l.refcountTableClusters * 512 / 8)
        #expect(l.totalClusters == 1 + l.refcountTableClusters + l.refcountBlocks + l.l1Clusters + UInt64(l.l2Tables.count) + 512)
    }

    @Test func badOptionsAreTypedErrors() throws {
        #expect(throws: QCOW2ViewError.virtualSizeNotSectorMultiple(1000)) { try QCOW2View(source: ZeroSource(size: 1000)) }
        #expect(throws: QCOW2ViewError.self) { try QCOW2View(source: ZeroSource(size: 512), options: QCOW2ViewOptions(clusterBits: 22)) }
        #expect(try QCOW2View(source: ZeroSource(size: 512), options: QCOW2ViewOptions(clusterBits: 9, pluginPointer: [1])).layout.pointerAreaClusters == 129)
        #expect(throws: QCOW2ViewError.self) {
            try QCOW2View(source: ZeroSource(size: 512), options: QCOW2ViewOptions(pluginPointer: [UInt8](repeating: 1, count: 70000)))
        }
        #expect(throws: NativeFormatOptionError.self) { try QCOW2Driver().viewOptions(NativeFormatOptions(keys: ["compat": "0.10"])) }
        #expect(throws: NativeFormatOptionError.self) { try QCOW2Driver().viewOptions(NativeFormatOptions(allocationUnit: 3000)) }
        #expect(try QCOW2Driver().viewOptions(NativeFormatOptions(keys: ["cluster_size": "4k"])).clusterBits == 12)
    }

    /// The pointer area has a fixed size: the layout is the same for any pointer content, up to
    /// `PluginPointerPlacement.maxBlobLength` bytes.
    @Test func pluginPointerAreaIsFixed() throws {
        let src = Self.disk(fill: 3)
        let a = try QCOW2View(source: src, options: QCOW2ViewOptions(pluginPointer: [1, 2, 3]))
        let big = [UInt8](repeating: 9, count: PluginPointerPlacement.maxBlobLength)
        let b = try QCOW2View(source: src, options: QCOW2ViewOptions(pluginPointer: big))
        let n = try QCOW2View(source: src)
        #expect(try QCOW2View(source: src, pluginPointer: [1, 2, 3]).skeleton() == a.skeleton())
        #expect(a.size == b.size && a.payloadStart == b.payloadStart)
        #expect(a.size == n.size + 2 * 65536, "two 64 KiB clusters of pointer area")
        #expect(try QCOW2PluginPointerArea.find(in: a) == [1, 2, 3])
        #expect(try QCOW2PluginPointerArea.find(in: b) == big)
        #expect(try QCOW2PluginPointerArea.find(in: n) == nil)
        // Only the pointer area differs; its clusters have refcount 0.
        let rt = a.layout.refcountTableOffset
        #expect(try a.read(at: 0, count: 65536) == b.read(at: 0, count: 65536))
        #expect(try a.read(at: rt, count: Int(a.size - rt)) == b.read(at: rt, count: Int(b.size - rt)))
        #expect(a.layout.refcount(ofCluster: 0) == 1 && a.layout.refcount(ofCluster: 1) == 0 && a.layout.refcount(ofCluster: 2) == 0)
        #expect(a.layout.refcount(ofCluster: 3) == 1)
        #expect(throws: QCOW2ViewError.self) { try QCOW2View(source: src, options: QCOW2ViewOptions(pluginPointer: big + [0])) }
        let r = try QCOW2Check.run(source: b)
        #expect(r.findings.isEmpty, "\(r.findings)")
    }
}

@Suite(.serialized) struct QCOW2ViewToolTests {
    static let tools = toolsMissing(["qemu-img"])

    /// raw → our view written → qemu-img compare identical, check clean, info compat 1.1; our
    /// reader reads it back; two runs give the same bytes.
    struct SizeCase: Sendable, CustomStringConvertible {
        let name: String
        let size: UInt64
        let writes: [Write]
        struct Write: Sendable { let offset: UInt64; let length: Int; let seed: UInt64 }
        var description: String { name }
        init(_ name: String, _ size: UInt64, _ w: [(UInt64, Int, UInt64)]) {
            self.name = name
            self.size = size
            writes = w.map { Write(offset: $0.0, length: $0.1, seed: $0.2) }
        }
    }

    static let sizeCases: [SizeCase] = [
        SizeCase("0", 0, []),
        SizeCase("512", 512, [(0, 512, 1)]),
        SizeCase("1M+512", Q2.MiB + 512, [(0, 4096, 2), (Q2.MiB - 100, 612, 3)]),
        SizeCase("cluster+512", 65536 + 512, [(65536, 512, 4)]),
        SizeCase("odd-holes", 9 * Q2.MiB, [(100_000, 5000, 5), (3 * Q2.MiB + 65535, 2, 6), (9 * Q2.MiB - 512, 512, 7)]),
    ]

    @Test(.requires(missing: tools), arguments: sizeCases)
    func rawToViewMatchesQemu(_ sc: SizeCase) throws {
        let name = sc.name, size = sc.size
        let writes = sc.writes.map { ($0.offset, $0.length, $0.seed) }
        let d = Scratch("q2view")
        let raw = d.file("src.raw"), q = d.file("out.qcow2"), q2 = d.file("again.qcow2")
        let src = try Q2.rawFile(raw, size: size, writes: writes)
        try Q2.writeView(src, to: q)
        try Q2.writeView(try RawFile(path: raw), to: q2)
        #expect(try Q2.bytes(q) == Q2.bytes(q2), "\(name): deterministic")
        let cmp = try Q2.tool(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, q])
        #expect(cmp.status == 0, "\(name): \(cmp.out)\(cmp.err)")
        let check = try Q2.qemuCheck(q)
        #expect(check.status == 0 && check.text.contains("No errors were found"), "\(name): \(check.text)")
        #expect(!check.text.contains("leaked"), "\(name)")
        let info = try Q2.must("qemu-img", "info", "--output=json", q)
        #expect(info.contains("\"format\": \"qcow2\"") && info.contains("\"compat\": \"1.1\""), "\(name): \(info)")
        #expect(info.contains("\"virtual-size\": \(size)"), "\(name)")
        #expect(info.contains("\"refcount-bits\": 16"), "\(name)")
        #expect(try DiskFormatRegistry.detect(path: q)?.name == "qcow2")
        let back = try QCOW2File.open(path: q)
        #expect(try back.read(at: 0, count: Int(size)) == src.read(at: 0, count: Int(size)), "\(name)")
        #expect(try QCOW2Check.run(path: q).findings.isEmpty, "\(name)")
    }

    /// Our file is qemu-img convert's file, byte for byte, when one L2 table maps the disk: same
    /// cluster placement (header, refcount table, refcount block, L1, L2, data in virtual order),
    /// same header and extensions. With several L2 tables the header, refcount table and
    /// refcount blocks are still identical (docs/formats/qcow2.md says what differs).
    @Test(.requires(missing: tools), arguments: ["512", "4k", "64k", "2M"])
    func identicalToQemuImgConvert(clusterSize: String) throws {
        let d = Scratch("q2same")
        let raw = d.file("d.raw"), ours = d.file("ours.qcow2"), theirs = d.file("theirs.qcow2")
        let size = 9 * Q2.MiB + 512
        try Q2.rawFile(raw, size: size, writes: [(100_000, 5000, 1), (3 * Q2.MiB + 65535, 2, 2), (9 * Q2.MiB, 512, 3)])
        try Q2.must("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=\(clusterSize)", raw, theirs)
        try Q2.writeView(try RawFile(path: raw), to: ours, options: NativeFormatOptions(keys: ["cluster_size": clusterSize]))
        let a = try Q2.bytes(ours), b = try Q2.bytes(theirs)
        #expect(a.count == b.count, "cluster \(clusterSize): size \(a.count) vs qemu's \(b.count)")
        let view = try QCOW2View(source: RawFile(path: raw), options: QCOW2Driver().viewOptions(NativeFormatOptions(keys: ["cluster_size": clusterSize])))
        // qemu-img allocates each L2 table just before the first data cluster it maps; we keep
        // every L2 table in the skeleton. With one L2 table the two orders coincide.
        let compared = view.layout.l2Tables.count == 1 ? a.count : Int(view.layout.l1Offset)
        let same = a.count >= compared && b.count >= compared && a[0..<compared] == b[0..<compared]
        let first = same ? nil : (0..<min(compared, a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
        #expect(first == nil, "cluster \(clusterSize): first difference at \(first.map { QCOW2.hex(UInt64($0)) } ?? "-")")
        #expect(try Q2.tool(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", ours, theirs]).status == 0)
    }

    /// Past one L2 table's coverage (8192 × 64 KiB = 512 MiB) with a sparse source, and 4 KiB
    /// clusters (L2 covers 2 MiB) so a small disk spans many L2 tables and refcount blocks.
    @Test(.requires(missing: tools), arguments: [16, 12, 9] as [UInt32])
    func pastOneL2Coverage(clusterBits: UInt32) throws {
        let d = Scratch("q2big")
        let size: UInt64 = clusterBits == 16 ? 1200 * Q2.MiB + 512 : 20 * Q2.MiB + 512
        let cover = (UInt64(1) << UInt64(clusterBits)) * (UInt64(1) << UInt64(clusterBits - 3))
        let writes: [(UInt64, Int, UInt64)] = [(0, 512, 1), (cover - 512, 1024, 2), (2 * cover + 7 * 512, 70000, 3), (size - 512, 512, 4)]
        let raw = d.file("s.raw"), q = d.file("s.qcow2")
        let src = try Q2.rawFile(raw, size: size, writes: writes)
        let view = try QCOW2View(source: src, options: QCOW2ViewOptions(clusterBits: clusterBits))
        #expect(view.layout.l2Tables.count >= 3)
        try Q2.writeView(src, to: q, options: NativeFormatOptions(allocationUnit: 1 << UInt64(clusterBits)))
        #expect(try Q2.tool(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, q]).status == 0)
        let check = try Q2.qemuCheck(q)
        #expect(check.status == 0 && check.text.contains("No errors were found"), "\(check.text)")
        let back = try QCOW2File.open(path: q)
        for (off, len, _) in writes {
            #expect(try back.read(at: off, count: min(len, Int(size - off))) == src.read(at: off, count: min(len, Int(size - off))))
        }
        #expect(try QCOW2Check.run(path: q).findings.isEmpty)
    }

    /// `create` through the driver: an empty disk QEMU accepts; `info` and `check` through the driver.
    @Test(.requires(missing: tools)) func driverCreateInfoCheck() throws {
        let d = Scratch("q2create")
        let p = d.file("new.qcow2")
        let driver = try #require(DiskFormatRegistry.driver(named: "QCOW2"))
        try driver.create(path: p, virtualSize: 10 * Q2.MiB, options: NativeFormatOptions(keys: ["cluster_size": "16k"]))
        #expect(try DiskFormatRegistry.detect(path: p)?.name == "qcow2")
        let check = try Q2.qemuCheck(p)
        #expect(check.status == 0, "\(check.text)")
        #expect(try Q2.must("qemu-img", "info", "--output=json", p).contains("\"cluster-size\": 16384"))
        try Q2.must("qemu-io", "-f", "qcow2", "-c", "write -P 0x61 1M 100k", p)
        #expect(try Q2.qemuCheck(p).status == 0)
        let info = try driver.info(path: p)
        #expect(info["virtual_size"] == .bytes(10 * Q2.MiB))
        #expect(info["cluster_size"] == .bytes(16384))
        #expect(info["compat"] == .string("1.1"))
        #expect(info["allocated_bytes"] == .bytes(7 * 16384))
        #expect(try driver.check(path: p).findings.isEmpty)
        #expect(try driver.open(path: p).read(at: Q2.MiB, count: 4) == [0x61, 0x61, 0x61, 0x61])
    }

    /// A 104-byte version 3 header (no compression type field), as older QEMUs wrote it:
    /// QEMU and our reader read the same disk.
    @Test(.requires(missing: tools)) func header104() throws {
        let d = Scratch("q2h104")
        let raw = d.file("h.raw"), q = d.file("h.qcow2")
        let src = try Q2.rawFile(raw, size: 2 * Q2.MiB, writes: [(70_000, 9000, 5)])
        try Q2.writeView(src, to: q)
        let f = try RawFile(path: q, writable: true)
        var h = try QCOW2Header.parse(try f.read(at: 0, count: 65536))
        h.headerLength = 104
        var cluster = h.serialize()
        #expect(cluster.count < 65536)
        cluster += [UInt8](repeating: 0, count: 65536 - cluster.count)
        try f.write(at: 0, cluster)
        try f.flush()
        let back = try QCOW2File.open(path: q)
        #expect(back.header.headerLength == 104 && back.header.extensions.count == 1)
        #expect(try back.read(at: 0, count: Int(back.size)) == Q2.bytes(raw))
        #expect(try Q2.tool(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, q]).status == 0)
        #expect(try Q2.qemuCheck(q).status == 0)
    }

    /// A plugin file's pointer extension: QEMU keeps and ignores it (compare, check, info agree).
    @Test(.requires(missing: tools)) func qemuIgnoresThePointerExtension() throws {
        let d = Scratch("q2ptr")
        let raw = d.file("p.raw"), q = d.file("p.qcow2")
        let src = try Q2.rawFile(raw, size: 3 * Q2.MiB, writes: [(4096, 8192, 9)])
        let blob = Array("{\"version\":1,\"backupPath\":\"b.bli\"}".utf8)
        let view = try QCOW2View(source: src, options: QCOW2ViewOptions(pluginPointer: blob))
        try SparseImageWriter.write(view, toPath: q, options: SparseImageWriter.Options(threads: 1, sync: false))
        #expect(try Q2.tool(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, q]).status == 0)
        let check = try Q2.qemuCheck(q)
        #expect(check.status == 0 && check.text.contains("No errors were found"), "\(check.text)")
        #expect(try Q2.tool(["qemu-img", "info", q]).status == 0)
        #expect(try QCOW2PluginPointerArea.find(in: RawFile(path: q)) == blob)
        let info = try QCOW2File.open(path: q).info(path: q)
        #expect(info["plugin_pointer_bytes"] == .bytes(UInt64(blob.count)))
        // When QEMU rewrites the header (qemu-img amend), it keeps the unknown extension.
        try Q2.must("qemu-img", "amend", "-f", "qcow2", "-o", "lazy_refcounts=on", q)
        #expect(try QCOW2PluginPointerArea.find(in: RawFile(path: q)) == blob)
        #expect(try Q2.qemuCheck(q).status == 0)
    }

    /// libqcow, an independent reader: qcowinfo reads the header.
    @Test(.requires(missing: toolsMissing(["qcowinfo"]))) func qcowinfoReadsOurFile() throws {
        let d = Scratch("q2libqcow")
        let raw = d.file("l.raw"), q = d.file("l.qcow2")
        let size = 5 * Q2.MiB + 512
        let src = try Q2.rawFile(raw, size: size, writes: [(0, 4096, 1), (2 * Q2.MiB - 7, 70000, 2), (size - 512, 512, 3)])
        try Q2.writeView(src, to: q)
        let info = try Q2.tool(["qcowinfo", q])
        #expect(info.status == 0, "\(info.out)\(info.err)")
        #expect(info.out.contains("Format version\t\t: 3"), "\(info.out)")
        #expect(info.out.contains("(\(size) bytes)"), "\(info.out)")
        #expect(info.out.contains("Encryption method\t: None"), "\(info.out)")
    }

    /// libqcow's qcowmount (FUSE) serves the same bytes as the source, with and without the
    /// plugin pointer extension, for 64 KiB and 4 KiB clusters.
    @Test(.requiresFUSE, .requires(missing: toolsMissing(["qcowmount"]))) func qcowmountServesTheSameBytes() throws {
        let d = Scratch("q2qcowmount")
        let raw = d.file("m.raw")
        let size = 5 * Q2.MiB + 512
        let src = try Q2.rawFile(raw, size: size, writes: [(0, 4096, 1), (2 * Q2.MiB - 7, 70000, 2), (size - 512, 512, 3)])
        let expected = try Q2.bytes(raw)
        for (i, o) in [QCOW2ViewOptions(), QCOW2ViewOptions(clusterBits: 12), QCOW2ViewOptions(pluginPointer: [1, 2, 3])].enumerated() {
            let q = d.file("m\(i).qcow2")
            try SparseImageWriter.write(try QCOW2View(source: src, options: o), toPath: q, options: SparseImageWriter.Options(threads: 1, sync: false))
            let mounted = try Q2.qcowmountBytes(q, in: d)
            #expect(mounted.count == expected.count, "case \(i)")
            #expect(mounted == expected, "case \(i)")
        }
    }
}
