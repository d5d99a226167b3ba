import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// Files made by QEMU read by `QCOW2File` byte for byte as `qemu-img convert -O raw` reads them.
@Suite(.serialized) struct QCOW2ReaderQemuTests {
    static let tools = toolsMissing(["qemu-img", "qemu-io"])

    /// A source disk with incompressible, compressible (text-like) and zero regions, across
    /// cluster and L2 boundaries; odd size.
    static func makeSource(_ path: String, size: UInt64) throws -> [UInt8] {
        let f = try RawFile.create(path: path, size: size)
        var text: [UInt8] = []
        var x: UInt64 = 7
        let alphabet = Array("the quick brown fox jumps over a lazy dog; ".utf8)
        for _ in 0..<300_000 { x = (x &* 6364136223846793005 &+ 1442695040888963407); text.append(alphabet[Int((x >> 33) % UInt64(alphabet.count))]) }
        try f.write(at: 0, Q2.pattern(70_000, seed: 1))
        try f.write(at: 200_000, text)
        try f.write(at: 2 * Q2.MiB - 512, Q2.pattern(1536, seed: 2))
        try f.write(at: size - 4096, text[0..<4096].map { $0 })
        try f.flush()
        return try Q2.bytes(path)
    }

    @Test(.requires(missing: tools), arguments: [
        ("plain", ["-o", "compat=1.1"]),
        ("compressed", ["-c"]),
        ("compressed-4k", ["-c", "-o", "cluster_size=4096"]),
        ("compressed-2M", ["-c", "-o", "cluster_size=2M"]),
        ("v2", ["-o", "compat=0.10"]),
        ("v2-compressed", ["-c", "-o", "compat=0.10,cluster_size=512"]),
        ("8bit-refcounts", ["-o", "refcount_bits=8,cluster_size=16k"]),
    ])
    func readsQemuConvertOutput(name: String, args: [String]) throws {
        let d = Scratch("q2read")
        let raw = d.file("s.raw"), q = d.file("q.qcow2")
        let size: UInt64 = 5 * Q2.MiB + 512
        let model = try Self.makeSource(raw, size: size)
        try Q2.must(["qemu-img", "convert", "-f", "raw", "-O", "qcow2"] + args + [raw, q])
        let f = try QCOW2File.open(path: q)
        #expect(f.size == size, "\(name)")
        #expect(try f.read(at: 0, count: Int(size)) == model, "\(name)")
        // Unaligned reads across clusters.
        for (off, n) in [(65535, 3), (199_999, 70_001), (Int(size) - 5000, 5000)] as [(Int, Int)] {
            #expect(try f.read(at: UInt64(off), count: n) == Array(model[off..<off + n]), "\(name) @\(off)")
        }
        let ext = try f.allExtents()
        #expect(ext.reduce(0) { $0 + $1.length } == size)
        if !name.contains("2M") {  // with 2 MiB clusters every cluster holds some data
            #expect(ext.contains { $0.kind != .data && $0.offset <= 3 * Q2.MiB && $0.end > 3 * Q2.MiB }, "\(name): the hole stays a hole")
        }
        if name.contains("compressed") {
            #expect(try (0..<f.clusterCount).contains { if case .compressed = try f.mapping(ofCluster: $0) { return true }; return false }, "\(name)")
        }
        let report = try QCOW2Check.run(path: q)
        #expect(report.findings.isEmpty, "\(name): \(report.findings)")
        // qcow2 → qcow2 through our reader and view (what `convert -O qcow2` of a qcow2 does).
        let again = d.file("again.qcow2")
        try Q2.writeView(f, to: again)
        #expect(try Q2.tool(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, again]).status == 0, "\(name)")
        #expect(try Q2.qemuCheck(again).status == 0, "\(name)")
        // Concurrent small reads (as FUSE makes them) agree with the model.
        let ok = Locked<[Bool]>([])
        DispatchQueue.concurrentPerform(iterations: 16) { i in
            let off = (UInt64(i) * (size / 16)) / 512 * 512
            let n = Int(min(12288, size - off))
            let good = (try? f.read(at: off, count: n)) == Array(model[Int(off)..<Int(off) + n])
            ok.withLock { $0.append(good) }
        }
        #expect(ok.current == Array(repeating: true, count: 16), "\(name)")
    }


    /// `convert -B`: the output holds only what differs from its backing file; read through the
    /// chain it is the whole disk. Also a relative backing name and a raw base.
    @Test(.requires(missing: tools)) func backingFiles() throws {
        let d = Scratch("q2back")
        let baseRaw = d.file("base.raw"), base = d.file("base.qcow2"), top = d.file("top.raw"), out = d.file("out.qcow2")
        let size: UInt64 = 4 * Q2.MiB
        try Q2.rawFile(baseRaw, size: size, writes: [(0, 300_000, 1), (3 * Q2.MiB, 65536, 2)])
        try Q2.must("qemu-img", "convert", "-f", "raw", "-O", "qcow2", baseRaw, base)
        // The top disk lacks the base's data at 3 MiB: the output must hide it (zero clusters).
        try Q2.rawFile(top, size: size, writes: [(0, 300_000, 1), (100_000, 1000, 3), (2 * Q2.MiB, 4096, 4)])
        try Q2.must("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-B", base, "-F", "qcow2", top, out)
        #expect(try Q2.tool(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", top, out]).status == 0)
        let f = try QCOW2File.open(path: out)
        #expect(f.header.backingFile == base && f.header.backingFormat == "qcow2")
        #expect(try f.read(at: 0, count: Int(size)) == Q2.bytes(top))
        #expect(try f.read(at: 3 * Q2.MiB, count: 65536) == [UInt8](repeating: 0, count: 65536))
        #expect(f.backingChain == [base])

        // Relative name, raw base, a chain of three, and the v3 zero flag over backing data.
        let mid = d.file("mid.qcow2"), leaf = d.file("leaf.qcow2")
        try Q2.must("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", mid)
        try Q2.must("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 65536 4096", mid)
        try Q2.must("qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", leaf)
        try Q2.must("qemu-io", "-f", "qcow2", "-c", "write -z 0 65536", "-c", "write -P 0x77 131072 512", leaf)
        try Q2.must("qemu-img", "convert", "-O", "raw", leaf, d.file("leaf.raw"))
        let l = try QCOW2File.open(path: leaf)
        #expect(l.backingChain.count == 2)
        #expect(try l.mapping(ofCluster: 0) == .zero)
        #expect(try l.read(at: 0, count: Int(size)) == Q2.bytes(d.file("leaf.raw")))
        let ext = try l.extents(in: 0..<Q2.MiB)
        #expect(ext.first == Extent(offset: 0, length: 65536, kind: .zero))
        // Through the registry, as the CLI opens it.
        let viaDriver = try #require(try DiskFormatRegistry.detect(path: leaf)).open(path: leaf)
        #expect(try viaDriver.read(at: 65536, count: 8192) == l.read(at: 65536, count: 8192))
    }

    /// A 1 PiB image (2^24 L1 entries' worth of clusters) with two writes: extents cost the L1
    /// size, not the cluster count; our view of it and qemu agree on the data.
    @Test(.requires(missing: tools)) func hugeSparseImage() throws {
        let d = Scratch("q2huge")
        let p = d.file("big.qcow2")
        try Q2.must("qemu-img", "create", "-q", "-f", "qcow2", p, "1P")
        let far: UInt64 = 700 << 40
        try Q2.must("qemu-io", "-f", "qcow2", "-c", "write -P 0x21 4096 512", "-c", "write -P 0x42 \(far) 65536", p)
        let f = try QCOW2File.open(path: p)
        #expect(f.size == 1 << 50)
        let data = try f.allExtents().filter { $0.kind == .data }
        #expect(data == [Extent(offset: 0, length: 65536, kind: .data), Extent(offset: far, length: 65536, kind: .data)])
        #expect(try f.read(at: far + 100, count: 2) == [0x42, 0x42])
        let view = try QCOW2View(source: f)
        #expect(view.allocatedClusters == 2)
        let out = d.file("copy.qcow2")
        try SparseImageWriter.write(view, toPath: out, options: SparseImageWriter.Options(threads: 1, sync: false))
        #expect(try Q2.qemuCheck(out).status == 0)
        #expect(try Q2.tool(["qemu-io", "-f", "qcow2", "-c", "read -P 0x42 \(far) 65536", out]).out.contains("read 65536/65536"))
    }

    @Test(.requires(missing: tools)) func backingProblemsAreTyped() throws {
        let d = Scratch("q2loop")
        let a = d.file("a.qcow2"), b = d.file("b.qcow2")
        try Q2.must("qemu-img", "create", "-q", "-f", "qcow2", b, "1M")
        try Q2.must("qemu-img", "create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", a)
        try Q2.must("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b)
        #expect(throws: QCOW2OpenError.self) { try QCOW2File.open(path: a) }
        do { _ = try QCOW2File.open(path: a) } catch let e as QCOW2OpenError {
            guard case .backingLoop = e else { Issue.record("\(e)"); return }
        }
        // Self loop.
        try Q2.must("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", b)
        #expect { try QCOW2File.open(path: b) } throws: { ($0 as? QCOW2OpenError).map { if case .backingLoop = $0 { true } else { false } } ?? false }
        // Missing.
        try Q2.must("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "gone.qcow2", "-F", "qcow2", b)
        #expect { try QCOW2File.open(path: b) } throws: { ($0 as? QCOW2OpenError).map { if case .backingMissing = $0 { true } else { false } } ?? false }
        // Too deep: 40 files in a chain.
        var prev = d.file("c0.qcow2")
        try Q2.must("qemu-img", "create", "-q", "-f", "qcow2", prev, "1M")
        for i in 1...40 {
            let p = d.file("c\(i).qcow2")
            try Q2.must("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "c\(i - 1).qcow2", "-F", "qcow2", p, "1M")
            prev = p
        }
        #expect { try QCOW2File.open(path: prev) } throws: { ($0 as? QCOW2OpenError).map { if case .backingTooDeep = $0 { true } else { false } } ?? false }
        #expect(try QCOW2File.open(path: d.file("c20.qcow2")).backingChain.count == 20)
    }

    @Test(.requires(missing: tools)) func refusedFeaturesAreTyped() throws {
        let d = Scratch("q2refuse")
        let enc = d.file("enc.qcow2"), ext = d.file("ext.qcow2"), l2 = d.file("l2.qcow2"), z = d.file("z.qcow2")
        // crypt_method 1 (AES) set in a plain image's header, and a real LUKS image when this
        // machine's qemu-img can make one (its PBKDF benchmark fails under heavy load).
        try Q2.must("qemu-img", "create", "-q", "-f", "qcow2", enc, "1M")
        let ef = try RawFile(path: enc, writable: true)
        try ef.write(at: 32, [0, 0, 0, 1])
        try ef.flush()
        #expect { try QCOW2File.open(path: enc) } throws: { ($0 as? QCOW2OpenError).map { if case .encrypted(_, 1) = $0 { true } else { false } } ?? false }
        let luks = d.file("luks.qcow2")
        if try Q2.tool(["qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=pw",
                        "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", luks, "1M"]).status == 0 {
            #expect { try QCOW2File.open(path: luks) } throws: { ($0 as? QCOW2OpenError).map { if case .encrypted(_, 2) = $0 { true } else { false } } ?? false }
        }
        try Q2.must("qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=\(d.file("data.raw"))", ext, "1M")
        #expect { try QCOW2File.open(path: ext) } throws: { ($0 as? QCOW2OpenError).map { if case .externalDataFile = $0 { true } else { false } } ?? false }
        try Q2.must("qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", l2, "1M")
        #expect { try QCOW2File.open(path: l2) } throws: { ($0 as? QCOW2OpenError).map { if case .unsupportedFeature = $0 { true } else { false } } ?? false }
        if try Q2.tool(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", z, "1M"]).status == 0 {
            #expect { try QCOW2File.open(path: z) } throws: { ($0 as? QCOW2OpenError).map { if case .unsupportedFeature = $0 { true } else { false } } ?? false }
        }
    }
}

extension Q2 {
    @discardableResult
    static func must(_ args: [String]) throws -> String {
        let r = try tool(args)
        guard r.status == 0 else { throw Failed(description: "\(args.joined(separator: " ")) -> \(r.status): \(r.out)\(r.err)") }
        return r.out
    }
}
