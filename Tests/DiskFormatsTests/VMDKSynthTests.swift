import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// The monolithicSparse view written with SparseImageWriter (the driver's `convert`), checked by
/// qemu-img (compare, check, info), libvmdk (vmdkinfo, vmdkmount) and our own reader.
@Suite struct VMDKSynthTests {
    static let sizes: [UInt64] = [512, VMDKT.MiB + 512, 64 * VMDKT.KiB + 512, 32 * VMDKT.MiB + 512]

    @Test(.requires(missing: toolsMissing(["qemu-img", "vmdkinfo"])), arguments: sizes)
    func qemuAndLibvmdkAgree(size: UInt64) throws {
        let d = Scratch("vmdk-synth")
        let rawPath = d.file("disk.raw"), out = d.file("disk.vmdk"), again = d.dir("again") + "/disk.vmdk"
        let raw = try VMDKT.raw(rawPath, size: size, ranges: VMDKT.boundaryRanges(size: size))
        try VMDKT.convert(raw, out)
        try VMDKT.convert(raw, again)
        #expect(try VMDKT.bytes(out) == VMDKT.bytes(again), "deterministic")

        let cmp = try runTool(["qemu-img", "compare", "-f", "raw", "-F", "vmdk", rawPath, out])
        #expect(cmp.status == 0 && cmp.stdout.contains("Images are identical."), "\(cmp.stdout) \(cmp.stderr)")
        let check = try runTool(["qemu-img", "check", "-f", "vmdk", out])
        #expect(check.status == 0 && check.stdout.contains("No errors were found"), "\(check.stdout) \(check.stderr)")
        let info = try runTool(["qemu-img", "info", "--output=json", out])
        #expect(info.stdout.contains("\"format\": \"vmdk\"") && info.stdout.contains("\"virtual-size\": \(size)"), "\(info.stdout)")
        #expect(info.stdout.contains("\"create-type\": \"monolithicSparse\""), "\(info.stdout)")
        let vi = try runTool(["vmdkinfo", out])
        #expect(vi.status == 0, "\(vi.stdout) \(vi.stderr)")
        #expect(vi.stdout.contains("Media size:\t\t\t") && vi.stdout.contains("(\(size) bytes)"), "\(vi.stdout)")
        #expect(vi.stdout.contains("Monolithic sparse"), "\(vi.stdout)")

        // Our reader and checker.
        let f = try VMDKFile.open(path: out)
        #expect(try VMDKT.same(f, raw))
        #expect(try VMDKCheck.run(path: out).findings == [])
        #expect(try DiskFormatRegistry.detect(path: out)?.name == "vmdk")
    }

    @Test(.requiresFUSE, .requires(missing: toolsMissing(["vmdkmount"])))
    func vmdkmountServesTheSameBytes() throws {
        let d = Scratch("vmdk-mount")
        let size = 3 * VMDKT.MiB + 512
        // Any file name: convert writes it into the extent line, which libvmdk opens by name.
        let rawPath = d.file("disk.raw"), out = d.file("some other name.vmdk")
        let raw = try VMDKT.raw(rawPath, size: size, ranges: VMDKT.boundaryRanges(size: size) + [VMDKT.MiB..<VMDKT.MiB + 70_000])
        try VMDKT.convert(raw, out)
        #expect(try VMDKFile.open(path: out).descriptor?.extents.first?.fileName == "some other name.vmdk")
        let mnt = d.dir("mnt")
        let m = try runDaemonizingTool(["vmdkmount", out, mnt], logPath: d.file("vmdkmount.log"))
        try #require(m.status == 0, "vmdkmount: \(m.stdout)")
        defer { _ = try? runTool(["umount", mnt]) }
        let c = try runTool(["cmp", rawPath, mnt + "/vmdk1"])
        #expect(c.status == 0, "cmp: \(c.stdout) \(c.stderr)")
        // Our stream-optimized file too.
        let stream = d.file("stream.vmdk"), mnt2 = d.dir("mnt2")
        try VMDKT.convert(raw, stream, subformat: "streamOptimized")
        let m2 = try runDaemonizingTool(["vmdkmount", stream, mnt2], logPath: d.file("vmdkmount2.log"))
        try #require(m2.status == 0, "vmdkmount: \(m2.stdout)")
        defer { _ = try? runTool(["umount", mnt2]) }
        let c2 = try runTool(["cmp", rawPath, mnt2 + "/vmdk1"])
        #expect(c2.status == 0, "cmp (streamOptimized): \(c2.stdout) \(c2.stderr)")
    }

    @Test func viewContract() throws {
        let src = PatternSource(size: 40 * VMDKT.MiB, dataRanges: [10..<20, 33 * VMDKT.MiB..<33 * VMDKT.MiB + 100_000])
        let v = try VMDKView(source: src)
        #expect(v.payloadStart == 128 * 512 && v.allocatedGrainCount == 3)
        #expect(v.fileOffset(ofVirtual: 15) == v.payloadStart + 15)
        #expect(v.fileOffset(ofVirtual: 64 * 1024) == nil)
        #expect(v.fileOffset(ofVirtual: 33 * VMDKT.MiB + 5) == v.payloadStart + 65536 + 5)
        let sk = try v.skeleton()
        #expect(Array(sk[0..<4]) == Array("KDMV".utf8))
        let other = try VMDKView(source: PatternSource(size: src.size, dataRanges: src.dataRanges.map { $0 }), options: .init(seed: Array(repeating: 0, count: 16)))
        #expect(try other.skeleton() == sk)
        let dump = v.layoutDump()
        #expect(dump == (try VMDKView(source: src)).layoutDump())
        #expect(dump.contains("allocated grains: 3 of 640") && dump.contains("createType=\"monolithicSparse\""), "\(dump)")
    }

    @Test func descriptorAsVMwareWritesIt() throws {
        let v = try VMDKView(source: ZeroSource(size: 100 * VMDKT.MiB), options: .init(adapterType: "lsilogic", extentName: "vm.vmdk"))
        let text = v.layout.descriptor.render()
        #expect(text.hasPrefix("# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID="))
        #expect(text.contains("parentCID=ffffffff\ncreateType=\"monolithicSparse\"\n\n# Extent description\nRW 204800 SPARSE \"vm.vmdk\"\n"))
        #expect(text.contains("ddb.adapterType = \"lsilogic\"\nddb.geometry.cylinders = \"12\"\nddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\n"))
        // IDE: 16 heads, like qemu-img (104857600 / (16·63·512) = 203).
        let ide = try VMDKView(source: ZeroSource(size: 100 * VMDKT.MiB))
        #expect(ide.layout.descriptor.ddbValue("ddb.geometry.cylinders") == "203")
        #expect(ide.layout.descriptor.ddbValue("ddb.geometry.heads") == "16")
        #expect(ide.layout.cid != v.layout.cid || ide.options.seed == v.options.seed)
        // CID from the seed.
        let s1 = try VMDKView(source: ZeroSource(size: 512), options: .init(seed: Array(repeating: 1, count: 16)))
        #expect(s1.layout.cid != ide.layout.cid)
    }

    @Test func optionsAreChecked() throws {
        let drv = VMDKDriver()
        #expect(throws: NativeFormatOptionError.self) { try drv.synthesisOptions(NativeFormatOptions(keys: ["adapter_type": "pvscsi"])) }
        do {
            _ = try drv.synthesisOptions(NativeFormatOptions(keys: ["adapter_type": "pvscsi"]))
        } catch let e as NativeFormatOptionError {
            #expect(e.reason.contains("VM's configuration"))
        }
        #expect(throws: NativeFormatOptionError.self) { try drv.synthesisOptions(NativeFormatOptions(keys: ["bogus": "1"])) }
        #expect(throws: NativeFormatOptionError.self) { try drv.synthesisOptions(NativeFormatOptions(subformat: "monolithicFlat")) }
        #expect(try drv.synthesisOptions(NativeFormatOptions(subformat: "streamoptimized", keys: ["adapter_type": "buslogic"])).adapterType == "buslogic")
        #expect(throws: VMDKSynthesisError.self) { try VMDKView(source: ZeroSource(size: 1000)) }
        #expect(throws: VMDKSynthesisError.self) { try VMDKView(source: ZeroSource(size: 4 << 40)) }
    }

    /// A plugin pointer as a ddb key: the layout (payloadStart, tables) does not move, qemu still reads it.
    @Test(.requires(missing: toolsMissing(["qemu-img"])))
    func descriptorExtrasKeepTheLayout() throws {
        let d = Scratch("vmdk-extras")
        let rawPath = d.file("disk.raw")
        let raw = try VMDKT.raw(rawPath, size: 2 * VMDKT.MiB, ranges: [0..<100])
        let o = VMDKSynthesisOptions(descriptorSectors: 64)
        let plain = try VMDKView(source: raw, options: o)
        let ptr = "ddb.bootlab.pointer = \"" + String(repeating: "QUJD", count: 4000) + "\""
        let with = try VMDKView(source: raw, options: o, descriptorExtras: [ptr])
        #expect(plain.payloadStart == with.payloadStart && plain.size == with.size)
        let after = 65 * 512  // header and the 64-sector descriptor area
        #expect(try plain.read(at: UInt64(after), count: Int(plain.payloadStart) - after) == with.read(at: UInt64(after), count: Int(plain.payloadStart) - after))
        let out = d.file("p.vmdk")
        _ = try SparseImageWriter.write(with, toPath: out, options: .init(threads: 1, sync: false))
        #expect(try VMDKFile.open(path: out).descriptor?.ddbValue("ddb.bootlab.pointer")?.count == 16000)
        let cmp = try runTool(["qemu-img", "compare", "-f", "raw", "-F", "vmdk", rawPath, out])
        #expect(cmp.status == 0, "\(cmp.stdout) \(cmp.stderr)")
        #expect(throws: VMDKSynthesisError.self) { try VMDKView(source: raw, descriptorExtras: [ptr]) }  // 20 sectors: too small
    }

    /// Our monolithicSparse file and qemu-img's for the same disk are the same bytes outside the
    /// descriptor text: header, redundant and primary directories and tables, grains, file size.
    @Test(.requires(missing: toolsMissing(["qemu-img"])))
    func sameBytesAsQemuOutsideTheDescriptor() throws {
        let d = Scratch("vmdk-vs-qemu")
        let size = 40 * VMDKT.MiB + 512
        let rawPath = d.file("d.raw"), ours = d.file("ours.vmdk"), theirs = d.file("qemu.vmdk")
        let mid: UInt64 = 33 * VMDKT.MiB
        let ranges: [Range<UInt64>] = [0..<5000, mid..<mid + 70_000, size - 512..<size]
        let raw = try VMDKT.raw(rawPath, size: size, ranges: ranges)
        try VMDKT.convert(raw, ours)
        #expect(try runTool(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", rawPath, theirs]).status == 0)
        let a = try VMDKT.bytes(ours), b = try VMDKT.bytes(theirs)
        #expect(a.count == b.count)
        let headerSame: Bool = a.prefix(512).elementsEqual(b.prefix(512))
        let rest = 21 * 512
        let restSame: Bool = a.dropFirst(rest).elementsEqual(b.dropFirst(rest))
        #expect(headerSame, "header")
        #expect(restSame, "directories, tables and grains")
    }

    /// Payload carries virtual ranges unchanged at `fileOffset(ofVirtual:)` (the NativeFormatView
    /// contract, as NativeFormatViewContractTests checks it for VHDX).
    @Test func payloadCarriesVirtualRangesUnchanged() throws {
        let src = PatternSource(size: 3 * VMDKT.MiB, dataRanges: [100..<70_000, 2 * VMDKT.MiB + 3..<2 * VMDKT.MiB + 9])
        let v = try VMDKView(source: src)
        for off: UInt64 in [100, 4096, 65_535, 65_536, 69_999, 2 * VMDKT.MiB, 2 * VMDKT.MiB + 8, 2 * VMDKT.MiB + 65_535] {
            let at = try #require(v.fileOffset(ofVirtual: off), "\(off)")
            #expect(try v.read(at: at, count: 1) == src.read(at: off, count: 1), "\(off)")
        }
        #expect(v.fileOffset(ofVirtual: VMDKT.MiB) == nil && v.fileOffset(ofVirtual: 3 * VMDKT.MiB) == nil)
        #expect(v.size == v.payloadStart + 3 * 65536)
        // The view's extent map: payload of unallocated parts inside allocated grains is zero.
        let ex = try v.extents(in: 0..<v.size)
        #expect(ex.first?.kind == .data && ex.reduce(0) { $0 + $1.length } == v.size)
    }

    /// `create` (the default: an empty view written) gives a file qemu-img accepts; `info` describes it.
    @Test(.requires(missing: toolsMissing(["qemu-img"])))
    func createAndInfo() throws {
        let d = Scratch("vmdk-create")
        let p = d.file("empty.vmdk")
        try VMDKDriver().create(path: p, virtualSize: 10 * VMDKT.MiB, options: NativeFormatOptions(keys: ["adapter_type": "lsilogic"]))
        let check = try runTool(["qemu-img", "check", "-f", "vmdk", p])
        #expect(check.status == 0, "\(check.stdout)")
        let info = try VMDKDriver().info(path: p)
        #expect(info["virtual_size"] == .bytes(10 * VMDKT.MiB))
        #expect(info["create_type"] == .string("monolithicSparse") && info["adapter_type"] == .string("lsilogic"))
        #expect(info["allocated_grains"] == .integer(0))
        #expect(try VMDKDriver().open(path: p).extents(in: 0..<10 * VMDKT.MiB).allSatisfy { $0.kind == .absent })
    }

    /// A large sparse disk (64 GiB, data at the start, the middle and the end): qemu-img compare
    /// identical and check clean; the skeleton holds 2048 grain tables per copy.
    @Test(.requires(missing: toolsMissing(["qemu-img"])))
    func largeSparseDisk() throws {
        let d = Scratch("vmdk-large")
        let size: UInt64 = 64 << 30
        let rawPath = d.file("big.raw"), out = d.file("big.vmdk")
        let half = size / 2 + 12_345 * 512
        let ranges: [Range<UInt64>] = [0..<4096, half..<half + 200_000, size - 4096..<size]
        let raw = try VMDKT.raw(rawPath, size: size, ranges: ranges)
        try VMDKT.convert(raw, out)
        let v = try VMDKView(source: raw)
        #expect(v.layout.gtCount == 2048 && v.allocatedGrainCount == 1 + 4 + 1)
        let cmp = try runTool(["qemu-img", "compare", "-f", "raw", "-F", "vmdk", rawPath, out])
        #expect(cmp.status == 0, "\(cmp.stdout) \(cmp.stderr)")
        let check = try runTool(["qemu-img", "check", "-f", "vmdk", out])
        #expect(check.status == 0, "\(check.stdout)")
        let f = try VMDKFile.open(path: out)
        for r in ranges { #expect(try f.read(at: r.lowerBound, count: r.count) == raw.read(at: r.lowerBound, count: r.count)) }
        #expect(try VMDKCheck.run(path: out).findings == [])
    }

    /// A plugin file with the largest pointer (64 KiB → an 87 384-character ddb line in a
    /// 2048-sector descriptor area): qemu-img and libvmdk still read the disk; the pointer reads back.
    @Test(.requires(missing: toolsMissing(["qemu-img", "vmdkinfo"])))
    func pluginFileWithTheLargestPointer() throws {
        let d = Scratch("vmdk-plugin")
        let rawPath = d.file("d.raw"), out = d.file("plugin.vmdk")
        let raw = try VMDKT.raw(rawPath, size: 3 * VMDKT.MiB, ranges: [0..<70_000, 2 * VMDKT.MiB..<2 * VMDKT.MiB + 512])
        var g = Bytes(seed: 5)
        let blob = g.bytes(PluginPointerPlacement.maxBlobLength)
        let drv = VMDKDriver()
        let v = try drv.pluginView(of: raw, options: NativeFormatOptions(keys: ["extent_name": "plugin.vmdk"]), pointer: blob)
        // 1 + 2048 descriptor sectors (QEMU reads up to 1 MiB of descriptor: deferred open) + tables, rounded to a grain
        #expect(v.payloadStart == 2176 * 512)
        _ = try SparseImageWriter.write(v, toPath: out, options: .init(threads: 1, sync: false))
        #expect(try drv.readPluginPointer(path: out) == blob)
        let cmp = try runTool(["qemu-img", "compare", "-f", "raw", "-F", "vmdk", rawPath, out])
        #expect(cmp.status == 0, "\(cmp.stdout) \(cmp.stderr)")
        #expect(try runTool(["qemu-img", "check", "-f", "vmdk", out]).status == 0)
        let vi = try runTool(["vmdkinfo", out])
        #expect(vi.status == 0 && vi.stdout.contains("(\(3 * VMDKT.MiB) bytes)"), "\(vi.stdout) \(vi.stderr)")
        #expect(VMDKBase64.decode(VMDKBase64.encode([1, 2])) == [1, 2] && VMDKBase64.decode(VMDKBase64.encode([])) == [])
        #expect(VMDKBase64.decode("a*==") == nil)
    }
}
