import BlockCore
import Foundation
import Processes
import Testing
import TestSupport
@testable import DiskFormats

/// What every registered format owes the CLI, the front-ends and the lab, checked on each driver
/// in `DiskFormatRegistry` through files on disk: its converted file is detected by content as
/// that format (by us and by qemu-img), reads back byte for byte through its reader, checks clean;
/// its plugin view carries the pointer where the format keeps it without moving anything; and it
/// names a byte inside each structure it synthesizes.
struct DiskFormatRegistryTests {
    static let size: UInt64 = 5 << 20 + 512

    static func disk() -> MemorySource {
        var bytes = [UInt8](repeating: 0, count: Int(size))
        var g = Bytes(seed: 42)
        let data = g.bytes(300_000)
        bytes.replaceSubrange(4096..<(4096 + data.count), with: data)
        bytes.replaceSubrange(Int(size) - 70_000..<Int(size) - 70_000 + 60_000, with: data[0..<60_000])
        return MemorySource(bytes, zeroRanges: [1 << 20..<4 << 20])
    }

    static func qemuName(_ format: String) -> String { format == "vhd" ? "vpc" : format }

    @Test(arguments: DiskFormatRegistry.names)
    func convertedFileIsDetectedReadAndClean(_ name: String) throws {
        let driver = try #require(DiskFormatRegistry.driver(named: name))
        let s = Scratch()
        let out = s.file("disk.\(name)")
        let source = Self.disk()
        _ = try driver.convert(source, toPath: out, options: NativeFormatOptions(seed: Array(repeating: 3, count: 16)),
                               writer: SparseImageWriter.Options(threads: 1, sync: false))
        #expect(try detectFormat(path: out).rawValue == name)
        #expect(try DiskFormatRegistry.detect(path: out)?.name == name)
        let back = try driver.open(path: out)
        #expect(back.size >= source.size, "\(name): the virtual size may only be rounded up")
        #expect(try back.read(at: 0, count: Int(source.size)) == source.read(at: 0, count: Int(source.size)), "\(name): bytes read back")
        let report = try driver.check(path: out)
        #expect(report.findings.isEmpty, "\(name): \(report.findings)")
        #expect(try driver.info(path: out)["format"]?.text.lowercased() == name)
        if let missing = toolsMissing(["qemu-img"]) { Issue.record("skipped: \(missing)"); return }
        let info = try run("qemu-img", ["info", "--output=json", out])
        #expect(info.stdout.contains("\"format\": \"\(Self.qemuName(name))\""), "\(name): qemu-img detects \(info.stdout)")
    }

    @Test(arguments: DiskFormatRegistry.names)
    func pluginViewKeepsThePointerWithoutMovingAnything(_ name: String) throws {
        let driver = try #require(DiskFormatRegistry.driver(named: name))
        let s = Scratch()
        let o = NativeFormatOptions(seed: Array(repeating: 5, count: 16))
        let short = Array("BLPTR".utf8) + [0, 0, 1] + Array(repeating: 0x41, count: 40)
        let long = Array("BLPTR".utf8) + [0, 0, 1] + Array(repeating: 0x42, count: 4000)
        let a = try driver.pluginView(of: Self.disk(), options: o, pointer: short)
        let b = try driver.pluginView(of: Self.disk(), options: o, pointer: long)
        #expect(a.size == b.size && a.payloadStart == b.payloadStart && a.trailerStart == b.trailerStart,
                "\(name): the layout must not depend on the pointer")
        let out = s.file("plugin.\(name)")
        _ = try SparseImageWriter.write(b, toPath: out, options: SparseImageWriter.Options(threads: 1, sync: false))
        let found = try #require(try driver.readPluginPointer(path: out), "\(name): pointer not found")
        #expect(found.starts(with: long), "\(name): the pointer read back")
        let plain = s.file("plain.\(name)")
        _ = try driver.convert(Self.disk(), toPath: plain, options: o, writer: SparseImageWriter.Options(threads: 1, sync: false))
        #expect(try driver.readPluginPointer(path: plain) == nil, "\(name): a plain file carries no pointer")
        // The plugin is still a valid file of its format for readers that never see the filter.
        #expect(try driver.open(path: out).read(at: 4096, count: 1000) == Self.disk().read(at: 4096, count: 1000))
    }

    @Test(arguments: DiskFormatRegistry.names)
    func structureSitesLieInsideStructures(_ name: String) throws {
        let driver = try #require(DiskFormatRegistry.driver(named: name))
        let s = Scratch()
        let out = s.file("disk.\(name)")
        let view = try driver.view(of: Self.disk(), options: NativeFormatOptions())
        _ = try SparseImageWriter.write(view, toPath: out, options: SparseImageWriter.Options(threads: 1, sync: false))
        let sites = try driver.structureSites(path: out)
        #expect(sites.count >= 2, "\(name): names at least two structures, found \(sites)")
        for (structure, offset) in sites {
            #expect(offset < view.payloadStart || offset >= view.trailerStart, "\(name): \(structure) at \(offset) is metadata, not payload")
        }
    }

    @Test func rawIsNotAFormat() throws {
        let s = Scratch()
        let out = s.file("disk.raw")
        _ = try SparseImageWriter.write(Self.disk(), toPath: out, options: SparseImageWriter.Options(threads: 1, sync: false))
        #expect(try detectFormat(path: out) == .raw)
        #expect(try DiskFormatRegistry.detect(path: out) == nil)
    }
}
