import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// A parent that is not a VHDX: bytes in memory plus a DataWriteGuid (what a plugin file offers).
final class FakeParent: BlockSource, VHDXParentIdentity, @unchecked Sendable {
    let mem: MemorySource
    let vhdxDataWriteGuid: GUID
    init(_ bytes: [UInt8], guid: GUID) { mem = MemorySource(bytes); vhdxDataWriteGuid = guid }
    var size: UInt64 { mem.size }
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws { try mem.read(at: offset, into: buffer) }
}

@Suite struct VHDXWriterDifferencingTests {
    func write(_ f: VHDXFile, _ model: inout [UInt8], _ writes: [(Int, Int, UInt64)]) throws {
        for (off, len, s) in writes {
            let data = pattern(len, seed: s)
            try data.withUnsafeBytes { try f.write(at: UInt64(off), from: $0) }
            model.replaceSubrange(off..<off + len, with: data)
        }
        try f.flush()
    }

    @Test func chainReadByUsAndLibvhdi() throws {
        let d = Scratch("diff")
        try FileManager.default.createDirectory(atPath: d.file("sub"), withIntermediateDirectories: true)
        let base = d.file("base.vhdx")
        let size = 12 << 20
        try run("qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M", base, String(size))
        try run("qemu-io", "-f", "vhdx", "-c", "write -P 0x61 0 3M", "-c", "write -P 0x62 5M 1M", base)
        var model = [UInt8](repeating: 0, count: size)
        model.replaceSubrange(0..<3 << 20, with: [UInt8](repeating: 0x61, count: 3 << 20))
        model.replaceSubrange(5 << 20..<6 << 20, with: [UInt8](repeating: 0x62, count: 1 << 20))
        let baseSHA = try sha(base)

        // A child one directory down: relative_path is ..\base.vhdx (libvhdi only looks in the
        // child's own directory, so the chain below keeps every file side by side).
        let down = try VHDXFile.createDifferencing(path: d.file("sub/down.vhdx"), parentPath: base)
        #expect(down.metadata.parentLocator?["relative_path"] == "..\\base.vhdx")
        #expect(try readAll(try VHDXFile.open(path: d.file("sub/down.vhdx"))) == model)
        let c1 = try VHDXFile.createDifferencing(path: d.file("c1.vhdx"), parentPath: base)
        #expect(c1.metadata.parentLocator?["relative_path"] == ".\\base.vhdx")
        #expect(try readAll(c1) == model)
        try write(c1, &model, [(100, 10, 1), ((1 << 20) - 700, 1400, 2), (4 << 20, 1 << 20, 3), ((8 << 20) + 4096, 512, 4)])
        let c2 = try VHDXFile.createDifferencing(path: d.file("c2.vhdx"), parentPath: d.file("c1.vhdx"))
        try write(c2, &model, [(1 << 19, 1 << 20, 5), ((5 << 20) + 33, 1, 6)])
        let c3 = try VHDXFile.createDifferencing(path: d.file("c3.vhdx"), parentPath: d.file("c2.vhdx"))
        try write(c3, &model, [(0, 512, 7), (size - 512, 512, 8)])

        #expect(try sha(base) == baseSHA)
        let r3 = try VHDXFile.open(path: d.file("c3.vhdx"))
        #expect(r3.parentChain.count == 3)
        #expect(try readAll(r3) == model)
        let ext = try r3.allExtents()
        #expect(ext.reduce(0) { $0 + $1.length } == UInt64(size))
        #expect(ext.contains { $0.kind == .data && $0.offset == 0 })
        let lv = try readWithVhdimount(d.file("c3.vhdx"), in: d)
        let firstDiff = zip(lv, model).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(lv.count == model.count && firstDiff == nil, "first difference at \(String(describing: firstDiff))")
        for p in ["c1.vhdx", "c2.vhdx", "c3.vhdx"] {
            #expect(try VHDXCheck.run(path: d.file(p)).findings.isEmpty, "\(p)")
        }
        let info = try ImageInfoProbes.describe(path: d.file("c3.vhdx"), probes: [])
        #expect(info["type"] == .string("differencing"))

        // Loop: point c1 at c3.
        let (rel, abs) = try VHDXParentPaths.locatorPaths(childPath: d.file("c1.vhdx"), parentPath: d.file("c3.vhdx"))
        try rewriteMetadata(d.file("c1.vhdx")) {
            $0.parentLocator = VHDXParentLocator(entries: [("parent_linkage", r3.vhdxDataWriteGuid.bracedLowercase),
                                                           ("relative_path", rel), ("absolute_win32_path", abs)])
        }
        #expect { _ = try VHDXFile.open(path: d.file("c3.vhdx")) } throws: { e in
            if case .loop = e as? VHDXParentError { return true }
            return false
        }
    }

    @Test func missingParentAndBrokenLinkage() throws {
        let d = Scratch("diff-err")
        let base = d.file("p.vhdx")
        let p = try VHDXFile.createDynamic(path: base, virtualSize: 4 << 20, blockSize: 1 << 20)
        _ = try VHDXFile.createDifferencing(path: d.file("c.vhdx"), parentPath: base)
        #expect(try VHDXFile.open(path: d.file("c.vhdx")).parentPath != nil)
        // Writing to the parent changes its DataWriteGuid: the child's link is broken.
        try [1, 2, 3].withUnsafeBytes { try p.write(at: 0, from: $0) }
        try p.flush()
        #expect { _ = try VHDXFile.open(path: d.file("c.vhdx")) } throws: { e in
            if case .linkageMismatch = e as? VHDXParentError { return true }
            return false
        }
        let report = try VHDXCheck.run(path: d.file("c.vhdx"))
        #expect(report.exitCode == 2)
        #expect(report.findings(for: "parent locator").first?.offset == 2 * VHDX.mib)
        try FileManager.default.removeItem(atPath: base)
        #expect { _ = try VHDXFile.open(path: d.file("c.vhdx")) } throws: { e in
            if case .missing = e as? VHDXParentError { return true }
            return false
        }
    }

    /// The parent can be any block source with a DataWriteGuid.
    @Test func injectedParent() throws {
        let d = Scratch("diff-inject")
        let base = d.file("p.vhdx")
        _ = try VHDXFile.createDynamic(path: base, virtualSize: 4 << 20, blockSize: 1 << 20)
        let child = try VHDXFile.createDifferencing(path: d.file("c.vhdx"), parentPath: base)
        var model = pattern(4 << 20, seed: 42)
        try write(child, &model, [(512, 512, 1)])
        let guid = try VHDXFile.open(path: base).vhdxDataWriteGuid
        var seen: [String] = []
        let f = try VHDXFile.open(path: d.file("c.vhdx"), parentOpener: { path in
            seen.append(path)
            return FakeParent(pattern(4 << 20, seed: 42), guid: guid)
        })
        #expect(seen.count == 1)
        #expect(try readAll(f) == model)
        #expect(throws: VHDXParentError.self) {
            _ = try VHDXFile.open(path: d.file("c.vhdx"), parentOpener: { _ in FakeParent([0], guid: .zero) })
        }
    }
}
