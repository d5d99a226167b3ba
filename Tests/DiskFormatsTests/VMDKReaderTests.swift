import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// qemu-img's VMDK outputs (every subformat we read) and our stream-optimized writer, read by our
/// reader byte for byte; the stream writer's files read by qemu-img and libvmdk.
@Suite struct VMDKReaderTests {
    @Test(.requires(missing: toolsMissing(["qemu-img"])),
          arguments: ["monolithicSparse", "streamOptimized", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"])
    func readsQemuOutput(subformat: String) throws {
        let d = Scratch("vmdk-read")
        let size = 33 * VMDKT.MiB + 512
        let rawPath = d.file("disk.raw"), out = d.file("q.vmdk")
        let raw = try VMDKT.raw(rawPath, size: size, ranges: VMDKT.boundaryRanges(size: size) + [5 * VMDKT.MiB..<5 * VMDKT.MiB + 300_000])
        let r = try runTool(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=\(subformat),adapter_type=lsilogic", rawPath, out])
        try #require(r.status == 0, "\(r.stderr)")
        let f = try VMDKFile.open(path: out)
        #expect(f.size == size)
        #expect(try VMDKT.same(f, raw), "\(subformat)")
        #expect(f.descriptor?.createType == subformat)
        let report = try VMDKCheck.run(path: out)
        #expect(report.corruptions == [], "\(report.findings)")
        #expect(try DiskFormatRegistry.detect(path: out)?.name == "vmdk")
        // Unwritten grains are holes in the extent map (sparse subformats).
        if subformat.contains("Sparse") || subformat == "streamOptimized" {
            let ex = try f.extents(in: 20 * VMDKT.MiB..<21 * VMDKT.MiB)
            #expect(ex.allSatisfy { $0.kind != .data }, "\(ex)")
        }
    }

    @Test(.requires(missing: toolsMissing(["qemu-img", "vmdkinfo"])), arguments: [512, VMDKT.MiB + 512, 32 * VMDKT.MiB + 512])
    func ourStreamOptimizedIsReadByQemuAndLibvmdk(size: UInt64) throws {
        let d = Scratch("vmdk-stream")
        let rawPath = d.file("disk.raw"), out = d.file("s.vmdk"), again = d.dir("again") + "/s.vmdk"
        _ = try VMDKT.raw(rawPath, size: size, ranges: VMDKT.boundaryRanges(size: size))
        // Text in the first grain, so the fixed-Huffman path is what qemu's zlib inflates.
        let text = (0..<400).map { "record \($0) of the stream test\n" }.joined()
        try RawFile(path: rawPath, writable: true).write(at: 0, Array(text.utf8.prefix(Int(min(size, 8192)))))
        let raw = try RawFile(path: rawPath)
        try VMDKT.convert(raw, out, subformat: "streamOptimized")
        try VMDKT.convert(raw, again, subformat: "streamOptimized")
        #expect(try VMDKT.bytes(out) == VMDKT.bytes(again))
        let cmp = try runTool(["qemu-img", "compare", "-f", "raw", "-F", "vmdk", rawPath, out])
        #expect(cmp.status == 0 && cmp.stdout.contains("Images are identical."), "\(cmp.stdout) \(cmp.stderr)")
        let check = try runTool(["qemu-img", "check", "-f", "vmdk", out])
        #expect(check.status == 0, "\(check.stdout) \(check.stderr)")
        let info = try runTool(["qemu-img", "info", out])
        #expect(info.stdout.contains("streamOptimized"), "\(info.stdout)")
        let vi = try runTool(["vmdkinfo", out])
        #expect(vi.status == 0 && vi.stdout.contains("(\(size) bytes)"), "\(vi.stdout) \(vi.stderr)")
        #expect(vi.stdout.contains("Stream optimized") || vi.stdout.contains("stream"), "\(vi.stdout)")
        let f = try VMDKFile.open(path: out)
        #expect(try VMDKT.same(f, raw))
        #expect(f.sparse?.header.gdOffset != VMDK.gdAtEnd)  // found through the footer
        // The first grain (text) is a zlib stream much smaller than the grain.
        let firstGrain = try RawFile(path: out).read(at: 128 * 512, count: 16)
        #expect(firstGrain.le64(0) == 0 && firstGrain[12] == 0x78 && firstGrain.le32(8) < 16384, "\(firstGrain.hex)")
        #expect(try VMDKCheck.run(path: out).findings == [])
        // The first grain record (lba, size, zlib stream) is the one qemu-img writes for the same disk.
        let theirs = d.file("q.vmdk")
        #expect(try runTool(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", rawPath, theirs]).status == 0)
        let qg = try RawFile(path: theirs).read(at: 128 * 512, count: 12), og = try RawFile(path: out).read(at: 128 * 512, count: 12)
        #expect(qg == og, "grain marker: ours \(og.hex), qemu \(qg.hex)")
        let n = Int(og.le32(8))
        #expect(try RawFile(path: theirs).read(at: 128 * 512 + 12, count: n) == RawFile(path: out).read(at: 128 * 512 + 12, count: n))
        // qemu-img can turn it back into raw, identical.
        let back = d.file("back.raw")
        let c2 = try runTool(["qemu-img", "convert", "-f", "vmdk", "-O", "raw", out, back])
        #expect(c2.status == 0)
        #expect(try VMDKT.bytes(back) == VMDKT.bytes(rawPath))
    }

    /// qemu's streamOptimized grains (dynamic-Huffman zlib streams) of text read back exactly.
    @Test(.requires(missing: toolsMissing(["qemu-img"])))
    func inflatesQemuCompressedText() throws {
        let d = Scratch("vmdk-text")
        let rawPath = d.file("t.raw"), out = d.file("t.vmdk")
        let f = try RawFile.create(path: rawPath, size: VMDKT.MiB)
        var text = ""
        for i in 0..<3000 { text += "line \(i): the quick brown fox \(i * 7919 % 1000)\n" }
        try f.write(at: 0, Array(text.utf8))
        #expect(try runTool(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", rawPath, out]).status == 0)
        #expect(try VMDKT.same(try VMDKFile.open(path: out), RawFile(path: rawPath)))
    }

    @Test func descriptorFileExtentsStayInTheirDirectory() throws {
        let d = Scratch("vmdk-desc")
        let sub = d.dir("vm")
        try VMDKT.write(d.file("secret-flat.vmdk"), [UInt8](repeating: 9, count: 1024))
        for name in ["../secret-flat.vmdk", "/etc/passwd", "a/b"] {
            let text = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2 FLAT \"\(name)\" 0\n"
            try VMDKT.write(sub + "/x.vmdk", Array(text.utf8))
            #expect(throws: FormatError.self) { try VMDKFile.open(path: sub + "/x.vmdk") }
        }
        // A plain name that is a symbolic link out of the directory: refused.
        try FileManager.default.createSymbolicLink(atPath: sub + "/link-flat.vmdk", withDestinationPath: d.file("secret-flat.vmdk"))
        let viaLink = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2 FLAT \"link-flat.vmdk\" 0\n"
        try VMDKT.write(sub + "/l.vmdk", Array(viaLink.utf8))
        #expect(throws: FormatError.self) { try VMDKFile.open(path: sub + "/l.vmdk") }
        // A flat extent shorter than its line: refused.
        try VMDKT.write(sub + "/short-flat.vmdk", [UInt8](repeating: 1, count: 512))
        let text = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2 FLAT \"short-flat.vmdk\" 0\n"
        try VMDKT.write(sub + "/y.vmdk", Array(text.utf8))
        #expect(throws: FormatError.self) { try VMDKFile.open(path: sub + "/y.vmdk") }
        // A ZERO extent and a flat one with an offset.
        try VMDKT.write(sub + "/ok-flat.vmdk", [UInt8](repeating: 0, count: 512) + [UInt8](repeating: 5, count: 1024))
        let ok = "# Disk DescriptorFile\r\nversion=1\r\nCID=fffffffe\r\nparentCID=ffffffff\r\ncreateType=\"vmfs\"\r\nRW 2 VMFS \"ok-flat.vmdk\" 1\r\nRW 1 ZERO\r\n"
        try VMDKT.write(sub + "/ok.vmdk", Array(ok.utf8))
        let f = try VMDKFile.open(path: sub + "/ok.vmdk")
        #expect(f.size == 1536)
        #expect(try f.read(at: 0, count: 1536) == [UInt8](repeating: 5, count: 1024) + [UInt8](repeating: 0, count: 512))
        // A parent is refused (no chains).
        let child = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=87654321\ncreateType=\"monolithicFlat\"\nRW 2 FLAT \"ok-flat.vmdk\" 0\n"
        try VMDKT.write(sub + "/c.vmdk", Array(child.utf8))
        #expect(throws: FormatError.self) { try VMDKFile.open(path: sub + "/c.vmdk") }
    }
}
