import BlockCore
import Foundation
import Testing
@testable import DiskFormats

private let MiB: UInt64 = 1 << 20

/// Digests of everything the five native views answer — file bytes (read whole and in odd
/// pieces), extent maps, file spans, layout dumps, virtual → file offsets — and of every
/// `convert` output, for sources chosen to reach each edge of the payload walk: holes between
/// data, a size that is not a multiple of the unit, no data at all, data everywhere.
///
/// Recorded from the views as they were before their run walks were folded into
/// `PayloadRunMap`, so the fold is proven byte-identical rather than assumed. A deliberate change
/// of any format's bytes re-records them: `VIEW_GOLDEN_PRINT=1 swift test --filter
/// ViewPayloadGoldenTests` prints the table to paste below (and review: every changed line is a
/// changed file).
struct ViewPayloadGoldenTests {
    /// A source of `size` bytes whose `data` ranges hold pseudo-random bytes and whose every other
    /// byte is in a `.zero` extent.
    struct Case: Sendable {
        let name: String
        let size: UInt64
        let data: [Range<UInt64>]

        func source() -> SpanSource {
            var bytes = [UInt8](repeating: 0, count: Int(size))
            var x: UInt64 = 0x9E37_79B9_7F4A_7C15 &+ size
            for r in data {
                for i in r {
                    x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    bytes[Int(i)] = UInt8(truncatingIfNeeded: x >> 33) | 1
                }
            }
            var zeros: [Range<UInt64>] = []
            var pos: UInt64 = 0
            for r in data.sorted(by: { $0.lowerBound < $1.lowerBound }) {
                if r.lowerBound > pos { zeros.append(pos..<r.lowerBound) }
                pos = max(pos, r.upperBound)
            }
            if pos < size { zeros.append(pos..<size) }
            return SpanSource(MemorySource(bytes, zeroRanges: zeros))
        }
    }

    /// A memory source that also answers `fileSpans` as if its bytes were file 3 at the same
    /// offsets, so the views' span mapping is recorded without a real file (whose fd would vary).
    final class SpanSource: FileBackedSource, @unchecked Sendable {
        let inner: MemorySource
        init(_ inner: MemorySource) { self.inner = inner }
        var size: UInt64 { inner.size }
        func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws { try inner.read(at: offset, into: buffer) }
        func extents(in range: Range<UInt64>) throws -> [Extent] { try inner.extents(in: range) }
        func fileSpans(in range: Range<UInt64>) -> [FileSpan]? {
            guard range.upperBound <= size else { return nil }
            return range.isEmpty ? [] : [.file(fd: 3, offset: range.lowerBound, length: UInt64(range.count))]
        }
    }

    static let cases: [Case] = [
        Case(name: "sparse", size: 40 * MiB,
             data: [0..<4096, MiB + 100..<MiB + 5000, 5 * MiB..<9 * MiB + 1, 20 * MiB - 1..<20 * MiB + 1,
                    33 * MiB + 512..<33 * MiB + 1024, 39 * MiB..<40 * MiB]),
        Case(name: "odd", size: 10 * MiB + 1536, data: [0..<65536, 10 * MiB - 4096..<10 * MiB + 1536]),
        Case(name: "empty", size: 8 * MiB, data: []),
        Case(name: "full", size: 6 * MiB, data: [0..<6 * MiB]),
    ]

    /// Allocation units besides each format's default: a small one, so runs span many units.
    static let smallUnit: [String: UInt64] = ["vhdx": MiB, "vmdk": 4096, "qcow2": 4096, "vhd": 512 << 10, "vdi": MiB]

    static func hex(_ bytes: [UInt8]) -> String { String(SHA256.hash(bytes).hex.prefix(16)) }
    static func hex(_ text: String) -> String { hex(Array(text.utf8)) }

    static func describe(_ e: [Extent]) -> String { e.map { "\($0.offset)+\($0.length)\($0.kind)" }.joined(separator: ",") }
    static func describe(_ s: [FileSpan]?) -> String {
        guard let s else { return "nil" }
        return s.map { span in
            switch span {
            case let .file(fd, o, n): "f\(fd)@\(o)+\(n)"
            case let .zeros(n): "z\(n)"
            }
        }.joined(separator: ",")
    }

    /// One line of digests for a view of `c`.
    static func digests(of view: any NativeFormatView, _ c: Case) throws -> String {
        let size = view.size
        let whole = try view.read(at: 0, count: Int(size))
        // The same bytes in odd pieces: every piece must agree with the whole read.
        let pieces = [1, 511, 4096, 65537, Int(MiB) + 3, 7]
        var pos: UInt64 = 0, i = 0
        while pos < size {
            let n = Int(min(UInt64(pieces[i % pieces.count]), size - pos))
            let got = try view.read(at: pos, count: n)
            guard got[...] == whole[Int(pos)..<Int(pos) + n] else {
                Issue.record("\(type(of: view).formatName) \(c.name): piece at \(pos)+\(n) differs from the whole read")
                break
            }
            pos += UInt64(n) + UInt64(i % 3) * 40_000
            i += 1
        }
        let ps = view.payloadStart, ts = view.trailerStart, unit = max(view.allocationUnit, 1)
        var windows: [Range<UInt64>] = [0..<size, ps..<ts, (ps > 0 ? ps - 1 : 0)..<min(size, ps + 12345),
                                        size / 3..<min(size, size / 2 + 7), (size > 70000 ? size - 70000 : 0)..<size]
        var spanWindows: [Range<UInt64>] = [ps..<ts, min(ts, ps + 777)..<min(ts, ps + 3 * unit + 5)]
        for k in 0..<UInt64(6) {
            let a = ps + k * unit + k * 333
            if a < ts { spanWindows.append(a..<min(ts, a + unit / 2 + 1)); windows.append(a..<min(size, a + unit + 9)) }
        }
        let extents = try windows.map { describe(try view.extents(in: $0)) }.joined(separator: "|")
        let spans = (view as? any FileBackedSource).map { fb in spanWindows.map { describe(fb.fileSpans(in: $0)) }.joined(separator: "|") } ?? "-"
        var offsets: [String] = []
        var v: UInt64 = 0
        while v < c.size { offsets.append(view.fileOffset(ofVirtual: v).map(String.init) ?? "-"); v += 4097 * 13 }
        let skeleton = try view.skeleton(), trailer = try view.trailer()
        return "\(hex(whole)) x\(hex(extents)) s\(hex(spans)) d\(hex(view.layoutDump())) o\(hex(offsets.joined(separator: ","))) k\(hex(skeleton + trailer)) n\(try view.allocatedUnitCount())"
    }

    /// Every (format, subformat, unit, source) → its line; convert outputs as `convert …` lines.
    static func table() throws -> [String: String] {
        var out: [String: String] = [:]
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("view-golden-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for c in cases {
            let src = c.source()
            for d in DiskFormatRegistry.drivers {
                for sub in d.subformats {
                    // A fixed VHD has no unit to choose.
                    for unit in d.name == "vhd" && sub == "fixed" ? [nil] : [nil, smallUnit[d.name]] {
                        let key = "\(d.name)/\(sub)/\(unit.map(String.init) ?? "default")/\(c.name)"
                        let o = NativeFormatOptions(subformat: sub, allocationUnit: unit, seed: Array(repeating: 7, count: 16))
                        // A fixed VHD must be a whole number of MiB; streamOptimized has no view.
                        if d.name == "vhd" && sub == "fixed" && c.size % MiB != 0 { continue }
                        if !(d.name == "vmdk" && sub == "streamOptimized") {
                            out[key] = try digests(of: try d.view(of: src, options: o), c)
                        }
                        let path = dir + "/\(d.name)-\(sub)-\(c.name).img"
                        _ = try d.convert(src, toPath: path, options: o, writer: .init(chunkSize: 1 << 20, threads: 2, sync: false))
                        out["convert " + key] = hex(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
                        try FileManager.default.removeItem(atPath: path)
                    }
                }
            }
        }
        return out
    }

    @Test func viewsMatchTheirRecordedDigests() throws {
        let got = try Self.table()
        if ProcessInfo.processInfo.environment["VIEW_GOLDEN_PRINT"] != nil {
            print(got.keys.sorted().map { "        \"\($0)\": \"\(got[$0]!)\"," }.joined(separator: "\n"))
        }
        #expect(got.count == Self.recorded.count)
        for key in got.keys.sorted() {
            #expect(got[key] == Self.recorded[key], "\(key)")
        }
    }

    /// Recorded at 267f7c0 (main, before the fold). Key: format/subformat/unit/source; value: file
    /// bytes, x extents, s file spans, d layout dump, o virtual → file offsets, k skeleton and
    /// trailer, n allocated units.
    static let recorded: [String: String] = [
        "convert qcow2/v3/4096/empty": "62ab3c881047b860",
        "convert qcow2/v3/4096/full": "865954b895c6056a",
        "convert qcow2/v3/4096/odd": "1267a64923e82776",
        "convert qcow2/v3/4096/sparse": "14ec8c34a485f983",
        "convert qcow2/v3/default/empty": "85cb1c116a8aa706",
        "convert qcow2/v3/default/full": "75e33eb6074e58d3",
        "convert qcow2/v3/default/odd": "d485ef3cd12e8273",
        "convert qcow2/v3/default/sparse": "da609c19bee228e1",
        "convert vdi/dynamic/1048576/empty": "90b4a3efb5854506",
        "convert vdi/dynamic/1048576/full": "72f4b441bac7fffc",
        "convert vdi/dynamic/1048576/odd": "f19ff2702ae091a7",
        "convert vdi/dynamic/1048576/sparse": "5771ecc3df2ed71b",
        "convert vdi/dynamic/default/empty": "90b4a3efb5854506",
        "convert vdi/dynamic/default/full": "72f4b441bac7fffc",
        "convert vdi/dynamic/default/odd": "f19ff2702ae091a7",
        "convert vdi/dynamic/default/sparse": "5771ecc3df2ed71b",
        "convert vhd/dynamic/524288/empty": "30b5ad00cc5b3636",
        "convert vhd/dynamic/524288/full": "f3ed25142e38edea",
        "convert vhd/dynamic/524288/odd": "c42d54485af120f6",
        "convert vhd/dynamic/524288/sparse": "2b11cd5e06a7e24c",
        "convert vhd/dynamic/default/empty": "7d341774cccfce22",
        "convert vhd/dynamic/default/full": "411e73e933895281",
        "convert vhd/dynamic/default/odd": "b2bdaae753e553a5",
        "convert vhd/dynamic/default/sparse": "2381c686799d319c",
        "convert vhd/fixed/default/empty": "7a6c0f704fcc8f20",
        "convert vhd/fixed/default/full": "03e497ef92112532",
        "convert vhd/fixed/default/sparse": "c9f8f477eb578e16",
        "convert vhdx/dynamic/1048576/empty": "d45dddd90ad9a172",
        "convert vhdx/dynamic/1048576/full": "dc4f8838ebdd101f",
        "convert vhdx/dynamic/1048576/odd": "ed43ea0611efe304",
        "convert vhdx/dynamic/1048576/sparse": "fdc09e153f480cab",
        "convert vhdx/dynamic/default/empty": "f3b9b8a29ac654d8",
        "convert vhdx/dynamic/default/full": "c4a8f14d3c5b3134",
        "convert vhdx/dynamic/default/odd": "b305d65b46dc6a95",
        "convert vhdx/dynamic/default/sparse": "dd630e9a2b48c83a",
        "convert vmdk/monolithicSparse/4096/empty": "8db5b7fb53ab323a",
        "convert vmdk/monolithicSparse/4096/full": "bb04eb9313a22ad9",
        "convert vmdk/monolithicSparse/4096/odd": "e22ea6f5b7ba446a",
        "convert vmdk/monolithicSparse/4096/sparse": "f054560d92be9bdd",
        "convert vmdk/monolithicSparse/default/empty": "78ca4ca14911ad44",
        "convert vmdk/monolithicSparse/default/full": "7dd56b03456e655d",
        "convert vmdk/monolithicSparse/default/odd": "0f1119207f227741",
        "convert vmdk/monolithicSparse/default/sparse": "da263602620b9487",
        "convert vmdk/streamOptimized/4096/empty": "c1ee3866b09e9731",
        "convert vmdk/streamOptimized/4096/full": "100a28a1eb40c6cf",
        "convert vmdk/streamOptimized/4096/odd": "29416ade09424d4b",
        "convert vmdk/streamOptimized/4096/sparse": "24dc2b48bec7d8b2",
        "convert vmdk/streamOptimized/default/empty": "b2ae93dcc78afc45",
        "convert vmdk/streamOptimized/default/full": "a6c2f308ab9a2a7d",
        "convert vmdk/streamOptimized/default/odd": "bd00d46f63ccd328",
        "convert vmdk/streamOptimized/default/sparse": "32cb5de9a3c6b1b8",
        "qcow2/v3/4096/empty": "62ab3c881047b860 x87ceee7ca2a50a7f scbe5cfdf7c2118a9 d1898dafc90db3503 o2f37098569bd041f k62ab3c881047b860 n0",
        "qcow2/v3/4096/full": "865954b895c6056a x323840af15d93082 s6ca75c7a48d3bfa6 df51a7cd2587d6a04 oc1b77efe2a55f12e k86d1e6200e26aa31 n1536",
        "qcow2/v3/4096/odd": "1267a64923e82776 x984f2dc98f1d96c8 s8c8583599e0319a4 d20eb15cc15d19e84 o3b6e7429c68389ca k41d023666318bc16 n18",
        "qcow2/v3/4096/sparse": "14ec8c34a485f983 x9812f0fb9cd8c206 s47ec001521fb8475 d5206c7a18ea9ce1a o0cb4543bfe1497f3 kfae1ababb3eb7d7d n1287",
        "qcow2/v3/default/empty": "85cb1c116a8aa706 xec5b21acb572f3c6 scbe5cfdf7c2118a9 d0b5307db409f4203 o2f37098569bd041f k85cb1c116a8aa706 n0",
        "qcow2/v3/default/full": "75e33eb6074e58d3 x2a4ab39b58a8a5d3 sdce1f893d50ed80e dfb4630085771aa8f o3de191b62cdd1c06 k88db9afc5e4e0c23 n96",
        "qcow2/v3/default/odd": "d485ef3cd12e8273 xa39d78e2c48e9d9c s027dee0e1e991b7c dbc262c0394f0ac65 o60d58f05e6fefd76 ke75a453b2a927a94 n3",
        "qcow2/v3/default/sparse": "da609c19bee228e1 xbcefbcde07a2f34f s737e051f6cd61f76 d9cee5abece915e30 o36b6ae16d84ec97a k5298056d49d53060 n86",
        "vdi/dynamic/1048576/empty": "90b4a3efb5854506 xcd8a5a575ba4e0b1 scbe5cfdf7c2118a9 ddc027e4420da490a o2f37098569bd041f k90b4a3efb5854506 n0",
        "vdi/dynamic/1048576/full": "72f4b441bac7fffc x23147827e2db55db s73ccd283ff7cedbe d2ac954632e4831f1 o40155e099d94c94a ke5848d2900e33110 n6",
        "vdi/dynamic/1048576/odd": "f19ff2702ae091a7 x7f6c635195e0f374 s135e1d95b4a9691c dd5d75fdb41a79fbd o103cedfea6213b3b ke1cafb9e6b442737 n3",
        "vdi/dynamic/1048576/sparse": "5771ecc3df2ed71b x6e283e0ec5352943 sf2e5832f241900a6 db1b4360805370d00 oad26da9cff87f681 k2aa4e5c5dba778a1 n11",
        "vdi/dynamic/default/empty": "90b4a3efb5854506 xcd8a5a575ba4e0b1 scbe5cfdf7c2118a9 ddc027e4420da490a o2f37098569bd041f k90b4a3efb5854506 n0",
        "vdi/dynamic/default/full": "72f4b441bac7fffc x23147827e2db55db s73ccd283ff7cedbe d2ac954632e4831f1 o40155e099d94c94a ke5848d2900e33110 n6",
        "vdi/dynamic/default/odd": "f19ff2702ae091a7 x7f6c635195e0f374 s135e1d95b4a9691c dd5d75fdb41a79fbd o103cedfea6213b3b ke1cafb9e6b442737 n3",
        "vdi/dynamic/default/sparse": "5771ecc3df2ed71b x6e283e0ec5352943 sf2e5832f241900a6 db1b4360805370d00 oad26da9cff87f681 k2aa4e5c5dba778a1 n11",
        "vhd/dynamic/524288/empty": "30b5ad00cc5b3636 x40ef47be29a67ac4 scbe5cfdf7c2118a9 d66bdb9691e58bd39 o2f37098569bd041f k30b5ad00cc5b3636 n0",
        "vhd/dynamic/524288/full": "f3ed25142e38edea x70a6a77d2ad43703 s9229db7527b17fc2 d02edabb3f422fb5a o9561047dfdf898ef kb1227f5ef0be1120 n12",
        "vhd/dynamic/524288/odd": "c42d54485af120f6 x8163b829af736b4e s0387df591732cb4c df513a9a56c840907 o375278f46eaadcad k1084eb36b6282d4d n3",
        "vhd/dynamic/524288/sparse": "2b11cd5e06a7e24c xfba10c65217f84d9 s9229db7527b17fc2 dc4552ced9e2c32f9 oad03d21568553149 k32055d23f0146e96 n16",
        "vhd/dynamic/default/empty": "7d341774cccfce22 x40ef47be29a67ac4 scbe5cfdf7c2118a9 d1af7c9c59c48451b o2f37098569bd041f k7d341774cccfce22 n0",
        "vhd/dynamic/default/full": "411e73e933895281 x33c8878cd5b037ee sdc2e53325b83d409 dd7c117e395bf3416 oe0b691256d7cf03f k65bbd34efebefbd1 n3",
        "vhd/dynamic/default/odd": "b2bdaae753e553a5 xaf878a16133b9aaf s0387df591732cb4c d8bb73ee0ecad7cf8 o64f27a53e2cdc4b6 ke60c3f98017c1898 n3",
        "vhd/dynamic/default/sparse": "2381c686799d319c x51df55d5a5655f5e s9229db7527b17fc2 df3e913eef2dc77b6 oba23eda6940a0043 k4178232fb8d73c07 n8",
        "vhd/fixed/default/empty": "7a6c0f704fcc8f20 x6dff686932a90309 s95b43255e04103aa daa48f9795bab3539 oc83be986a86072b3 kaf264d3c1123e854 n0",
        "vhd/fixed/default/full": "03e497ef92112532 x53152b5dfcfb4689 s0e7184efe98b3c19 de77ed9f1b9fa6442 odee8df2f3d124ba3 k409c0b475cf3192b n12288",
        "vhd/fixed/default/sparse": "c9f8f477eb578e16 x06acca6d69c85abf s26ca2d2b83738af7 d3fe8afa620b3ecbc o2c53d1876c1b43ae k42499cc9dba91f50 n10262",
        "vhdx/dynamic/1048576/empty": "d45dddd90ad9a172 xe401c44d3a904596 scbe5cfdf7c2118a9 ddfdbf01b9ab99f30 o2f37098569bd041f kd45dddd90ad9a172 n0",
        "vhdx/dynamic/1048576/full": "dc4f8838ebdd101f xbdbc98f726c268e3 s73ccd283ff7cedbe d5d5c89072cc16871 o9011e75c88442e06 k342bc6177f5db242 n6",
        "vhdx/dynamic/1048576/odd": "ed43ea0611efe304 x77a1cf55e64ea638 s135e1d95b4a9691c da4015daa37f30dd5 o1bac32c21e6b12be kdc30bf11743185d4 n3",
        "vhdx/dynamic/1048576/sparse": "fdc09e153f480cab x295538cafb5712bb sf2e5832f241900a6 db17d0c77c1386445 o623ec85a3f31d5e5 kb61da6ee801580ba n11",
        "vhdx/dynamic/default/empty": "f3b9b8a29ac654d8 x8839f480abdc19c5 scbe5cfdf7c2118a9 dd30b66a1332aeb66 o2f37098569bd041f kf3b9b8a29ac654d8 n0",
        "vhdx/dynamic/default/full": "c4a8f14d3c5b3134 x25ba6c773abc783f sff07bc0b819276e4 d2774554b77fb3589 o9011e75c88442e06 k38c630a0dbfbd789 n1",
        "vhdx/dynamic/default/odd": "b305d65b46dc6a95 x9cc877ec70d5254a s282797f713069368 d3df0e049985ae88d o726bbf7b35e8b591 k410528e0936088d4 n2",
        "vhdx/dynamic/default/sparse": "dd630e9a2b48c83a x5195cbe95c0f0d72 s01b97acd2e7fa7fc d4b6e22b1f3d453e5 oe2c765a910388862 k416f000d73a62078 n4",
        "vmdk/monolithicSparse/4096/empty": "05df57d769d0d46d x3f54804f31150bc4 scbe5cfdf7c2118a9 d8e460f99b1fbb212 o2f37098569bd041f k05df57d769d0d46d n0",
        "vmdk/monolithicSparse/4096/full": "bc0b00455926f653 xfdcf8ae0cbed6de9 s6ca75c7a48d3bfa6 d9a3bf07c14a5af5a o8e0576c00315e2c1 k064e0df011d4e4cc n1536",
        "vmdk/monolithicSparse/4096/odd": "0de4a8bbba7de0b5 x24dfa09b7e5aaf10 s8c8583599e0319a4 d81c25b0c4f9d4be1 o283f447a6443ab64 kb251356c15dc7098 n18",
        "vmdk/monolithicSparse/4096/sparse": "2881777840445400 xb8e17b2977c40449 s47ec001521fb8475 d5886fc6d267eabdd ofa6f5810149faa04 k06d066e9c371e60b n1287",
        "vmdk/monolithicSparse/default/empty": "e83cf168a6ebf1b5 x5b3fb28edcc5689c scbe5cfdf7c2118a9 def5c96726a675418 o2f37098569bd041f ke83cf168a6ebf1b5 n0",
        "vmdk/monolithicSparse/default/full": "036d027a5ba027e3 x3673ae378251ae7c sdce1f893d50ed80e d5bdc4d657c8ebe8b of9daeaf596d0f162 k83b5a0bb2bf7d355 n96",
        "vmdk/monolithicSparse/default/odd": "bd7ef483e916127e xeeec31e49e87b7a5 s027dee0e1e991b7c d62f81a27b942dad5 o949e8364589fc911 kc9380643db37cfd1 n3",
        "vmdk/monolithicSparse/default/sparse": "da08bfebfdb3618d xae7ec7f9ea0afef3 s737e051f6cd61f76 deb9492ce3694f6e4 o9a1a0fef2f3c3f42 kaa880a358d7ccc1b n86",
    ]
}
