import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

private let MiB: UInt64 = 1 << 20

/// The plugin-file seam for VHD and VDI: `pluginView` embeds the pointer blob, a plugin file
/// (skeleton + trailer in a sparse full-size file, payload holes) is still a valid image for
/// qemu-img (and libvhdi), and `readPluginPointer`/`structureSites` work on it without payload.
@Suite("VHD/VDI plugin seam", .serialized)
struct VHDPluginTests {
    static let blob = Array("{\"pointer\":\"plugin\"}".utf8) + [UInt8](repeating: 0x42, count: PluginPointerPlacement.maxBlobLength - 20)

    /// Writes what the exposure layer stores: [0, payloadStart) and [trailerStart, size) of the
    /// view, the rest a hole.
    func writePluginFile(_ v: any NativeFormatView, _ path: String) throws {
        let f = try RawFile.create(path: path, size: v.size)
        try f.write(at: 0, try v.skeleton())
        try f.write(at: v.trailerStart, try v.trailer())
    }

    @Test(arguments: ["vhd", "vdi"])
    func pluginFiles(_ fmt: String) throws {
        let d = Scratch("plugin-\(fmt)")
        let drv = try #require(DiskFormatRegistry.driver(named: fmt))
        let src = PatternSource(size: 9 * MiB + 512, dataRanges: [0..<4096, 5 * MiB..<5 * MiB + 100])
        let view = try drv.pluginView(of: src, options: NativeFormatOptions(seed: Array(1...16)), pointer: Self.blob)
        let full = d.file("full.\(fmt)"), plugin = d.file("plugin.\(fmt)")
        try SparseImageWriter.write(view, toPath: full, options: .init(deferredPrefix: drv.signatureLength, sync: false))
        try writePluginFile(view, plugin)
        let qfmt = fmt == "vhd" ? "vpc" : "vdi"
        for p in [full, plugin] {
            #expect(try drv.readPluginPointer(path: p) == Self.blob)
            #expect((try qemuInfo(p)["virtual-size"] as? NSNumber)?.uint64Value == src.size)
            #expect(try DiskFormatRegistry.detect(path: p)?.name == fmt)
            #expect(!(try drv.check(path: p)).isCorrupt)
        }
        if fmt == "vhd" { #expect(try runTool(["vhdiinfo", plugin]).status == 0) }
        // The full file is the disk; the plugin file's payload is holes, its metadata identical.
        let rawCopy = d.file("src.raw")
        try SparseImageWriter.write(src, toPath: rawCopy, options: .init(sync: false))
        #expect(try runTool(["qemu-img", "compare", "-f", "raw", "-F", qfmt, rawCopy, full]).status == 0)
        #expect(try RawFile(path: plugin).read(at: 0, count: Int(view.payloadStart)) == RawFile(path: full).read(at: 0, count: Int(view.payloadStart)))
        #expect(try RawFile(path: plugin).size == RawFile(path: full).size)
        // Without a pointer: none read back; a qemu-img file: none either.
        let plain = d.file("plain.\(fmt)")
        _ = try drv.convert(src, toPath: plain, options: NativeFormatOptions(), writer: .init(sync: false))
        #expect(try drv.readPluginPointer(path: plain) == nil)
        let q = d.file("q.\(fmt)")
        try run("qemu-img", "convert", "-f", "raw", "-O", qfmt, rawCopy, q)
        #expect(try drv.readPluginPointer(path: q) == nil)
        // The pointer changes only the pointer area's bytes.
        let a = try view.skeleton(), b = try drv.view(of: src, options: NativeFormatOptions(seed: Array(1...16))).skeleton()
        #expect(a.count == b.count)
        #expect(a.indices.filter { a[$0] != b[$0] }.allSatisfy { (0x1000..<0x20000).contains($0) })
    }

    /// Every structure site, flipped in a copy, is noticed: by our check (corruption), and for
    /// the structures QEMU reads, by qemu-img.
    @Test(arguments: ["vhd", "vdi"])
    func structureSitesAreNoticed(_ fmt: String) throws {
        let d = Scratch("sites-\(fmt)")
        let drv = try #require(DiskFormatRegistry.driver(named: fmt))
        let path = d.file("s.\(fmt)")
        _ = try drv.convert(PatternSource(size: 6 * MiB, dataRanges: [MiB..<MiB + 4096]), toPath: path,
                            options: NativeFormatOptions(), writer: .init(sync: false))
        let sites = try drv.structureSites(path: path)
        #expect(Set(sites.keys) == (fmt == "vhd" ? ["footer", "footer copy", "dynamic disk header", "BAT entry"] : ["header", "block map entry"]))
        let bytes = try fileBytes(path)
        for (name, at) in sites {
            var b = bytes
            b[Int(at)] ^= 0x5A
            let p = d.file("m-\(name).\(fmt)")
            try Data(b).write(to: URL(fileURLWithPath: p))
            let noticed = (try? drv.check(path: p))?.isCorrupt ?? true
            #expect(noticed, "\(fmt) \(name) at \(at)")
        }
        // A plugin file's sites are the full file's.
        let plugin = d.file("p.\(fmt)")
        try writePluginFile(try drv.view(of: PatternSource(size: 6 * MiB, dataRanges: [MiB..<MiB + 4096]), options: NativeFormatOptions()), plugin)
        #expect(try drv.structureSites(path: plugin) == sites)
    }

    /// A fixed VHD (Azure) has no byte to spare before its footer: the plugin keeps the pointer in
    /// `<plugin>.pointer`, named by a tag + SHA-256 in the footer's reserved area. The plugin is
    /// still a fixed VHD for QEMU and libvhdi, our check is clean, the pointer reads back, and a
    /// sidecar that is missing or not the one the footer names is an error, never a silent "not a
    /// plugin".
    @Test func fixedVHDKeepsItsPointerBeside() throws {
        let d = Scratch("vhd-fixed-plugin")
        let drv = VHDDriver()
        let src = PatternSource(size: 4 * MiB, dataRanges: [0..<4096])
        let v = try drv.pluginView(of: src, options: NativeFormatOptions(subformat: "fixed"), pointer: Self.blob)
        #expect(v.sidecarPointer == Self.blob && v.payloadStart == 0 && v.trailerStart == 4 * MiB)
        let plugin = d.file("az.vhd")
        try writePluginFile(v, plugin)
        try Data(Self.blob).write(to: URL(fileURLWithPath: plugin + VHDSidecarTag.suffix))
        #expect(try drv.readPluginPointer(path: plugin) == Self.blob)
        #expect(try VHDCheck.run(path: plugin).findings.isEmpty)
        if toolsMissing(["qemu-img", "vhdiinfo"]) == nil {
            let info = try run("qemu-img", ["info", "-f", "vpc", "--output=json", plugin])
            #expect(info.stdout.contains("\"virtual-size\": \(4 * MiB)"), "\(info.stdout)")
            #expect(try run("vhdiinfo", [plugin]).stdout.contains("Fixed"))
        } else {
            Issue.record("skipped: \(toolsMissing(["qemu-img", "vhdiinfo"])!)")
        }
        // A plain fixed VHD carries no tag: not a plugin.
        let plain = d.file("plain.vhd")
        try writePluginFile(try drv.view(of: src, options: NativeFormatOptions(subformat: "fixed")), plain)
        #expect(try drv.readPluginPointer(path: plain) == nil)
        // The sidecar must be the one the footer names.
        try Data(Self.blob.dropLast() + [0x43]).write(to: URL(fileURLWithPath: plugin + VHDSidecarTag.suffix))
        #expect(throws: FormatError.self) { _ = try drv.readPluginPointer(path: plugin) }
        try FileManager.default.removeItem(atPath: plugin + VHDSidecarTag.suffix)
        #expect(throws: FormatError.self) { _ = try drv.readPluginPointer(path: plugin) }
        let z = try VHDView(source: ZeroSource(size: MiB), options: .init(subformat: .fixed))
        let trailer = try z.trailer(), last = try z.read(at: MiB, count: 512)
        #expect(z.trailerStart == MiB)
        #expect(trailer == last)
        #expect(try z.allocatedUnitCount() == 0)
        let dyn = try VHDView(source: PatternSource(size: 9 * MiB, dataRanges: [0..<1, 5 * MiB..<5 * MiB + 1]))
        #expect(try dyn.allocatedUnitCount() == 2)
        #expect(dyn.trailerStart == dyn.size - 512)
        #expect(try VHDView(source: PatternSource(size: 2 * MiB, dataRanges: [0..<1, 600..<1500]), options: .init(subformat: .fixed)).allocatedUnitCount() == 3)
        let vdi = try VDIView(source: PatternSource(size: 9 * MiB, dataRanges: [0..<1, 5 * MiB..<5 * MiB + 1]))
        #expect(try vdi.allocatedUnitCount() == 2)
        #expect(vdi.trailerStart == vdi.size)
    }
}
