import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// Damaged qcow2 files: `QCOW2Check` and `qemu-img check` both see the damage; the reader
/// answers with typed errors, never a crash or a huge allocation.
@Suite(.serialized) struct QCOW2CheckTests {
    static let tools = toolsMissing(["qemu-img", "qemu-io"])

    /// A qemu-made image with data in clusters 0, 1 and 5 (64 KiB clusters).
    static func image(_ d: Scratch, _ name: String = "c.qcow2") throws -> String {
        let p = d.file(name)
        try Q2.must("qemu-img", "create", "-q", "-f", "qcow2", p, "8M")
        try Q2.must("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 128k", "-c", "write -P 0x22 320k 64k", p)
        return p
    }

    /// Offsets of the L2 table and of L2 entry `j`.
    static func l2Entry(_ p: String, _ j: UInt64) throws -> UInt64 {
        let h = try QCOW2Header.parse(try RawFile(path: p).read(at: 0, count: 4096))
        let l2 = try Q2.peek64(p, at: h.l1TableOffset) & QCOW2.offsetMask
        return l2 + j * 8
    }

    @Test(.requires(missing: tools)) func cleanImageIsClean() throws {
        let d = Scratch("q2chk")
        let p = try Self.image(d)
        #expect(try QCOW2Check.run(path: p).findings.isEmpty)
        #expect(try Q2.qemuCheck(p).status == 0)
    }

    /// Internal snapshots share clusters: refcounts above 1, COPIED cleared; the check walks the
    /// snapshot table and every snapshot's tables and finds the image clean, as qemu-img does.
    @Test(.requires(missing: tools)) func snapshotsAreCounted() throws {
        let d = Scratch("q2snap")
        let p = try Self.image(d)
        try Q2.must("qemu-img", "snapshot", "-c", "one", p)
        try Q2.must("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 64k 4k", "-c", "write -P 0x44 1M 64k", p)
        try Q2.must("qemu-img", "snapshot", "-c", "two", p)
        try Q2.must("qemu-io", "-f", "qcow2", "-c", "write -P 0x55 0 512", p)
        #expect(try Q2.qemuCheck(p).status == 0)
        let r = try QCOW2Check.run(path: p)
        #expect(r.findings.isEmpty, "\(r.findings)")
        try Q2.must("qemu-img", "convert", "-O", "raw", p, d.file("s.raw"))
        let f = try QCOW2File.open(path: p)
        #expect(f.header.nbSnapshots == 2)
        #expect(try f.read(at: 0, count: Int(f.size)) == Q2.bytes(d.file("s.raw")))
    }

    /// Persistent dirty bitmaps own clusters too (directory, tables, bitmap data): counted, so
    /// the image is clean without leaks, as qemu-img says.
    @Test(.requires(missing: tools)) func bitmapsAreCounted() throws {
        let d = Scratch("q2bm")
        let p = d.file("bm.qcow2")
        try Q2.must("qemu-img", "create", "-q", "-f", "qcow2", p, "64M")
        try Q2.must("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 1M", p)
        try Q2.must("qemu-img", "bitmap", "--add", p, "b0")
        try Q2.must("qemu-img", "bitmap", "--add", "-g", "65536", p, "b1")
        try Q2.must("qemu-io", "-f", "qcow2", "-c", "write -P 2 2M 1M", p)
        #expect(try Q2.qemuCheck(p).status == 0)
        let r = try QCOW2Check.run(path: p)
        #expect(r.findings.isEmpty, "\(r.findings)")
        #expect(try QCOW2File.open(path: p).read(at: 2 * Q2.MiB, count: 1) == [2])
    }

    /// An L2 entry redirected to another data cluster: both checkers report corruption, ours names
    /// the doubly used cluster and the leaked one.
    @Test(.requires(missing: tools)) func flippedL2EntryIsCaught() throws {
        let d = Scratch("q2chk")
        let p = try Self.image(d)
        let e0 = try Self.l2Entry(p, 0), e5 = try Self.l2Entry(p, 5)
        try Q2.poke64(p, at: e0, try Q2.peek64(p, at: e5))
        let r = try QCOW2Check.run(path: p)
        #expect(r.isCorrupt)
        #expect(r.findings.contains { $0.structure == "refcount" && $0.message.contains("refcount 1 but 2 reference(s)") }, "\(r.findings)")
        #expect(r.findings.contains { $0.message.contains("leaked") })
        let q = try Q2.qemuCheck(p)
        #expect(q.status == 2, "\(q.text)")
        // One flipped bit in an entry's offset: unaligned.
        let p2 = try Self.image(d, "c2.qcow2")
        try Q2.flip(p2, at: try Self.l2Entry(p2, 1) + 6, mask: 0x02)
        let r2 = try QCOW2Check.run(path: p2)
        #expect(r2.isCorrupt, "\(r2.findings)")
        #expect(try Q2.qemuCheck(p2).status == 2)
        #expect(throws: FormatError.self) { try QCOW2File.open(path: p2).read(at: 65536, count: 512) }
    }

    @Test(.requires(missing: tools)) func damagedStructuresAreCaught() throws {
        let d = Scratch("q2chk")
        // L2 entry past the end of the file.
        let a = try Self.image(d, "a.qcow2")
        try Q2.poke64(a, at: try Self.l2Entry(a, 0), (1 << 40) | QCOW2.copiedFlag)
        #expect(try QCOW2Check.run(path: a).isCorrupt)
        #expect(try Q2.qemuCheck(a).status != 0)
        #expect(throws: FormatError.self) { try QCOW2File.open(path: a).read(at: 0, count: 512) }
        // A refcount set to 0.
        let b = try Self.image(d, "b.qcow2")
        let h = try QCOW2Header.parse(try RawFile(path: b).read(at: 0, count: 4096))
        let rb = try Q2.peek64(b, at: h.refcountTableOffset) & QCOW2.offsetMask
        let f = try RawFile(path: b, writable: true)
        try f.write(at: rb, [0, 0])
        try f.flush()
        let rr = try QCOW2Check.run(path: b)
        #expect(rr.findings.contains { $0.message.contains("cluster 0 at 0x0: refcount 0 but 1") }, "\(rr.findings)")
        #expect(try Q2.qemuCheck(b).status == 2)
        // An L1 entry naming the L1 table itself as its L2 table (a table loop).
        let c = try Self.image(d, "l.qcow2")
        try Q2.poke64(c, at: h.l1TableOffset, h.l1TableOffset | QCOW2.copiedFlag)
        let rc = try QCOW2Check.run(path: c)
        #expect(rc.findings.contains { $0.message.contains("overlap") }, "\(rc.findings)")
        #expect(try Q2.qemuCheck(c).status != 0)
        let lf = try QCOW2File.open(path: c)
        _ = try? lf.read(at: 0, count: Int(lf.size))  // reads or throws, never hangs
        // Truncated to 3 clusters: the L2 table (and more) is gone.
        let t = try Self.image(d, "t.qcow2")
        try RawFile(path: t, writable: true).truncate(to: 3 * 65536)
        #expect(throws: (any Error).self) { try QCOW2File.open(path: t).read(at: 0, count: 512) }
        #expect(try QCOW2Check.run(path: t).isCorrupt)
    }

    /// Each structure site the driver names (the lab's `structure-byte:NAME` faults invert it)
    /// is noticed by qemu-img check and by ours.
    @Test(.requires(missing: tools)) func structureSitesAreNoticed() throws {
        let d = Scratch("q2sites")
        let raw = d.file("s.raw"), q = d.file("s.qcow2")
        try Q2.rawFile(raw, size: 3 * Q2.MiB, writes: [(65536, 4096, 1)])
        try Q2.writeView(try RawFile(path: raw), to: q)
        let sites = try QCOW2Driver().structureSites(path: q)
        #expect(Set(sites.keys) == ["header", "refcount table", "refcount block", "L1 entry", "L2 entry"])
        for (name, at) in sites {
            let copy = d.file("\(name).qcow2")
            try Data(try Q2.bytes(q)).write(to: URL(fileURLWithPath: copy))
            try Q2.flip(copy, at: at)
            #expect(try Q2.qemuCheck(copy).status != 0, "\(name): qemu-img check")
            if name == "header" {
                #expect(throws: (any Error).self) { try QCOW2File.open(path: copy) }
                continue
            }
            let r = try QCOW2Check.run(path: copy)
            #expect(name == "refcount block" ? !r.findings.isEmpty : r.isCorrupt, "\(name): \(r.findings)")
        }
    }

    /// Header fields that would make a reader allocate or loop without bound.
    @Test(.requires(missing: tools)) func hostileHeaderFields() throws {
        let d = Scratch("q2hdr")
        let p = try Self.image(d)
        let good = try Q2.bytes(p)
        func mutated(_ change: (inout [UInt8]) -> Void) -> MemorySource { var b = good; change(&b); return MemorySource(b) }
        let cases: [(String, (inout [UInt8]) -> Void)] = [
            ("magic", { $0[3] ^= 1 }),
            ("version 4", { QCOW2BE.put32(&$0, 4, at: 4) }),
            ("cluster_bits 40", { QCOW2BE.put32(&$0, 40, at: 20) }),
            ("size 2^62", { QCOW2BE.put64(&$0, 1 << 62, at: 24) }),
            ("l1_size huge", { QCOW2BE.put32(&$0, 0xFFFF_FFFF, at: 36) }),
            ("l1 past EOF", { QCOW2BE.put64(&$0, 1 << 50, at: 40) }),
            ("l1 unaligned", { QCOW2BE.put64(&$0, 0x30200, at: 40) }),
            ("refcount table huge", { QCOW2BE.put32(&$0, 0xFFFF_FFFF, at: 56) }),
            ("header_length", { QCOW2BE.put32(&$0, 0x7FFF_FFF8, at: 100) }),
            ("extension length", { QCOW2BE.put32(&$0, 0x1234, at: 112); QCOW2BE.put32(&$0, 0xFFFF_FFF0, at: 116) }),
            ("backing name", { QCOW2BE.put64(&$0, 0xFFFF_FFFF_FFFF_FF00, at: 8); QCOW2BE.put32(&$0, 100, at: 16) }),
            ("crypt", { QCOW2BE.put32(&$0, 1, at: 32) }),
            ("unknown incompatible", { $0[72] = 0x80 }),
            ("truncated header", { $0.removeSubrange(60...) }),
        ]
        for (name, change) in cases {
            let src = mutated(change)
            #expect(throws: (any Error).self, "\(name)") { _ = try QCOW2File(source: src).read(at: 0, count: 512) }
            _ = try? QCOW2Check.run(source: src)
        }
        // Every byte of the structures flipped in turn: typed errors or a successful read.
        let h = try QCOW2Header.parse(Array(good[0..<4096]))
        let l2 = QCOW2BE.u64(good, Int(h.l1TableOffset)) & QCOW2.offsetMask
        let spots = Array(0..<120) + (0..<64).map { Int(h.l1TableOffset) + $0 } + (0..<64).map { Int(l2) + $0 }
            + (0..<32).map { Int(h.refcountTableOffset) + $0 }
        for at in spots {
            let src = mutated { $0[at] ^= 0xA5 }
            do {
                let f = try QCOW2File(source: src)
                _ = try? f.read(at: 0, count: Int(min(f.size, 1 << 20)))
                _ = try? f.allExtents()
            } catch is FormatError {} catch is QCOW2OpenError {} catch {
                Issue.record("byte \(at): untyped error \(error)")
            }
            _ = try? QCOW2Check.run(source: src)
        }
    }
}
