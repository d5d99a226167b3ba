import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

private let MiB: UInt64 = 1 << 20

/// Damaged VDIs: header fields and block map entries flipped, truncations, offsets past EOF,
/// huge sizes. Typed errors from the reader, named findings from check; qemu-img check agrees
/// on the block map (the only structure it checks).
@Suite struct VDICheckTests {
    func clean(_ d: Scratch) throws -> (path: String, view: VDIView) {
        let path = d.file("c.vdi")
        let v = try writeVDI(PatternSource(size: 6 * MiB, dataRanges: [0..<4096, 3 * MiB..<3 * MiB + 512, 4 * MiB..<4 * MiB + 1]), path,
                             .init(seed: Array(repeating: 5, count: 16)))
        #expect(v.allocatedBlockCount == 3)
        #expect(try VDICheck.run(path: path).findings.isEmpty)
        return (path, v)
    }

    func poke(_ path: String, _ at: UInt64, _ bytes: [UInt8]) throws {
        try RawFile(path: path, writable: true).write(at: at, bytes)
    }

    func expectFinding(_ path: String, _ structure: String, _ offset: UInt64, _ text: String,
                       sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try VDICheck.run(path: path)
        #expect(r.exitCode == 2, "\(r.findings)", sourceLocation: sourceLocation)
        let hit = r.findings.contains { $0.structure == structure && $0.offset == offset && $0.message.contains(text) && $0.severity == .corruption }
        #expect(hit, "\(r.findings)", sourceLocation: sourceLocation)
    }

    /// A flipped byte in a block map entry: a slot index past the image (caught by qemu-img check
    /// as "too large" and by us), or a slot used twice (caught by both as well).
    @Test func flippedBlockMapEntry() throws {
        let d = Scratch("vdichk-map")
        let (path, _) = try clean(d)
        let at = VDILayout.blockMapOffset + 3 * 4   // block 3 → slot 1
        try poke(path, at + 1, [0x01])              // slot 0x101
        try expectFinding(path, "block map entry 3", at, "not below")
        let q = try runTool(["qemu-img", "check", "-f", "vdi", path])
        #expect(q.status == 2 && (q.stdout + q.stderr).contains("too large"), "\(q.stdout) \(q.stderr)")
        #expect { _ = try VDIFile.open(path: path) } throws: { ($0 as? FormatError)?.structure == "block map entry 3" }

        try poke(path, at, [0, 0, 0, 0])            // block 3 → slot 0, also block 0's
        try expectFinding(path, "block map entry 3", at, "also used by block 0")
        let q2 = try runTool(["qemu-img", "check", "-f", "vdi", path])
        #expect(q2.status == 2, "\(q2.stdout) \(q2.stderr)")
    }

    @Test func headerFields() throws {
        let d = Scratch("vdichk-h")
        let (path, v) = try clean(d)
        let good = v.header.serialize()
        func with(_ change: (inout VDIHeader) -> Void) throws -> String {
            var h = v.header
            change(&h)
            try poke(path, 0, h.serialize())
            return path
        }
        try expectFinding(try with { $0.blocksAllocated = 2 }, "header", 0x184, "the block map has 3")
        try expectFinding(try with { $0.blockMapOffset = 0x7000_0000 }, "header", 0x154, "outside the file")
        #expect { _ = try VDIFile.open(path: path) } throws: { ($0 as? FormatError)?.offset == 0x154 }
        try expectFinding(try with { $0.diskSize = 1 << 60 }, "header", 0x170, "exceeds")
        #expect { _ = try VDIFile.open(path: path) } throws: { ($0 as? FormatError)?.offset == 0x170 }
        try expectFinding(try with { $0.legacyGeometry[3] = 4096 }, "header", 0x168, "sector size")
        try expectFinding(try with { $0.dataOffset = 0x100000 }, "header", 0x158, "inside the block map")
        _ = try with { $0.imageTypeRaw = 4; $0.linkUUID = GUID.derived(seed: [1], label: "p") }
        #expect(throws: VDIUnsupportedError.self) { _ = try VDIFile.open(path: path) }
        try poke(path, 0x40, [0, 0, 0, 0])
        #expect { _ = try VDIFile.open(path: path) } throws: { ($0 as? FormatError)?.offset == 0x40 }
        #expect(throws: VDICheck.CannotCheck.self) { _ = try VDICheck.run(path: path) }
        try poke(path, 0, good)
        try poke(path, 0x44, [0, 0, 2, 0])
        #expect { _ = try VDIFile.open(path: path) } throws: { ($0 as? FormatError)?.reason.contains("version") == true }
    }

    /// Slots past the end of the file and truncations at every boundary.
    @Test func truncationsAndOffsetsPastEOF() throws {
        let d = Scratch("vdichk-t")
        let (path, v) = try clean(d)
        let bytes = try fileBytes(path)
        for n in [0, 64, 0x47, 0x48, 511, 512, 0x1000, Int(VDILayout.blockMapOffset) + 6, Int(v.payloadStart), Int(v.payloadStart) + 100, bytes.count - 1] {
            let src = MemorySource(Array(bytes.prefix(n)))
            do { _ = try VDIFile(source: src) } catch is FormatError {} catch { Issue.record("\(n): \(error)") }
            do { _ = try VDICheck.run(source: src) } catch is VDICheck.CannotCheck {} catch { Issue.record("\(n): \(error)") }
        }
        let cut = MemorySource(Array(bytes.prefix(bytes.count - Int(MiB) + 1)))
        let r = try VDICheck.run(source: cut)
        #expect(r.findings.contains { $0.message.contains("extends past the end") })
        #expect { _ = try VDIFile(source: cut) } throws: { ($0 as? FormatError)?.structure.hasPrefix("block map entry") == true }
        // Every header and map byte flipped in turn: typed errors or a read, never a crash.
        for at in Array(0..<512) + Array(Int(VDILayout.blockMapOffset)..<Int(VDILayout.blockMapOffset) + 24) {
            var b = bytes
            b[at] ^= 0xA5
            let src = MemorySource(b)
            do {
                let f = try VDIFile(source: src)
                _ = try f.read(at: 0, count: Int(min(f.size, 1 << 20)))
            } catch is FormatError {} catch is VDIUnsupportedError {} catch { Issue.record("\(at): \(error)") }
            do { _ = try VDICheck.run(source: src) } catch is VDICheck.CannotCheck {}
        }
    }

    @Test func detectionAndInfo() throws {
        let d = Scratch("vdi-detect")
        let (path, _) = try clean(d)
        #expect(try DiskFormatRegistry.detect(path: path)?.name == "vdi")
        let info = try VDIDriver().info(path: path)
        #expect(info["virtual_size"] == .bytes(6 * MiB) && info["type"] == .string("dynamic"))
        #expect(try VDIDriver().open(path: path).size == 6 * MiB)
    }
}
