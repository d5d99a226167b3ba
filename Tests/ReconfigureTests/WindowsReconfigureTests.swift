import BlockCore
import Foundation
import Processes
import Testing
@testable import Reconfigure

/// Windows cannot boot here; the proof is reading back: hivexget on the edited hives, the NTFS
/// volume still mounting with ntfs-3g, and nothing else on it changed.
@Suite(.serialized) struct WindowsReconfigureTests {
    static let bootmgr = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}"
    static let loader = "{3f7c1a2e-0000-4000-8000-b007c0de0001}"

    /// An MBR partition device element (see WindowsReconfigurer's offsets).
    static func element(signature: UInt32, offset: UInt64) -> [UInt8] {
        var e = [UInt8](repeating: 0, count: 0x58)
        e.putLE32(6, at: 0x10)
        e.putLE32(0x48, at: 0x18)
        e.putLE64(offset, at: 0x20)
        e.putLE32(1, at: 0x38)
        e.putLE32(signature, at: 0x3C)
        return e
    }

    static func makeHives(in dir: URL) throws -> (system: String, bcd: String) {
        let old = RegistryType.dword(0x1111_1111) + [UInt8](repeating: 0, count: 8).enumerated().map { i, _ in UInt8(((63 * 512) >> (8 * i)) & 0xFF) }
        let system = dir.appendingPathComponent("SYSTEM").path
        try Data(MinimalHive.bytes(rootName: "SYSTEM")).write(to: URL(fileURLWithPath: system))
        let h = try Hive(path: system)
        try h.set(try h.ensureNode("Select"), "Current", type: RegistryType.dword, RegistryType.dword(1))
        let ahci = try h.ensureNode("ControlSet001\\Services\\storahci")
        try h.set(ahci, "Start", type: RegistryType.dword, RegistryType.dword(0))
        try h.set(ahci, "Group", type: RegistryType.sz, RegistryType.string("SCSI miniport"))
        try h.set(try h.ensureNode("ControlSet001\\Services\\atapi"), "Start", type: RegistryType.dword, RegistryType.dword(3))
        _ = try h.ensureNode("ControlSet001\\Control\\CriticalDeviceDatabase")
        let md = try h.ensureNode("MountedDevices")
        try h.set(md, "\\DosDevices\\C:", type: RegistryType.binary, old)
        try h.set(md, "\\??\\Volume{0c0ffee0-0000-4000-8000-000000000001}", type: RegistryType.binary, old)
        try h.commit()
        let bcd = dir.appendingPathComponent("BCD").path
        try Data(MinimalHive.bytes(rootName: "NewStoreRoot")).write(to: URL(fileURLWithPath: bcd))
        let b = try Hive(path: bcd)
        try b.set(try b.ensureNode("Objects\\\(bootmgr)\\Elements\\11000001"), "Element", type: RegistryType.binary, element(signature: 0x1111_1111, offset: 63 * 512))
        try b.set(try b.ensureNode("Objects\\\(loader)\\Elements\\11000001"), "Element", type: RegistryType.binary, element(signature: 0x1111_1111, offset: 63 * 512))
        try b.set(try b.ensureNode("Objects\\\(loader)\\Elements\\21000001"), "Element", type: RegistryType.binary, element(signature: 0x1111_1111, offset: 63 * 512))
        try b.commit()
        return (system, bcd)
    }

    @Test func minimalHiveOpensAndReadsBack() throws {
        let dir = try Fixture.tempDir("hive")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (system, _) = try Self.makeHives(in: dir)
        #expect(try Fixture.sh(["hivexget", system, "ControlSet001\\Services\\storahci", "Start"]) == "0\n")
        #expect(try Fixture.sh(["hivexget", system, "Select", "Current"]) == "1\n")
    }

    @Test func windowsHivesBCDAndBootSectorFollowTheComposedDisk() throws {
        let dir = try Fixture.tempDir("windows")
        defer { try? FileManager.default.removeItem(at: dir) }
        let (system, bcd) = try Self.makeHives(in: dir)
        let base = dir.appendingPathComponent("win.raw").path
        try Fixture.sh([Fixture.testsDir.appendingPathComponent("Fixtures/make-windows.sh").path, base, system, bcd])
        let baseDigest = try Fixture.sha256(base)
        let size = try RawFile(path: base).size
        let layer = try RawFile.create(path: dir.appendingPathComponent("win.layer").path, size: size)
        let r = try Reconfigurator.reconfigure(image: DiskImage(path: base, format: "raw"), layer: layer, target: "hyperv-gen1", drivers: try Fixture.drivers)
        #expect(r.os == "windows")
        #expect(r.originalDrivers == ["storahci"])
        #expect(r.changes.contains { $0.kind == "ntfs-hidden-sectors" && $0.detail == "63 → 2048" })
        #expect(r.changes.filter { $0.kind == "bcd-device" }.count == 3)
        #expect(try Fixture.sha256(base) == baseDigest)
        let again = try Reconfigurator.reconfigure(image: DiskImage(path: base, format: "raw"), layer: layer, target: "hyperv-gen1", drivers: try Fixture.drivers)
        #expect(!again.changed, "second run: \(again.changes)")

        // Read back from base ▸ layer, without libguestfs.
        let disk = dir.appendingPathComponent("composed.raw").path
        try Fixture.compose(base: base, layer: layer, into: disk)
        let part = dir.appendingPathComponent("part.img").path
        try Fixture.sh(["dd", "if=\(disk)", "of=\(part)", "bs=1M", "skip=1", "status=none"])
        let sys2 = dir.appendingPathComponent("SYSTEM.out").path, bcd2 = dir.appendingPathComponent("BCD.out").path
        try Data(try Command(["ntfscat", part, "/Windows/System32/config/SYSTEM"]).run().stdout).write(to: URL(fileURLWithPath: sys2))
        try Data(try Command(["ntfscat", part, "/Boot/BCD"]).run().stdout).write(to: URL(fileURLWithPath: bcd2))
        func get(_ hive: String, _ key: String, _ value: String) throws -> String { try Fixture.sh(["hivexget", hive, key, value]) }
        #expect(try get(sys2, "ControlSet001\\Services\\atapi", "Start") == "0\n")
        #expect(try get(sys2, "ControlSet001\\Services\\atapi", "Group") == "SCSI miniport\n")
        #expect(try get(sys2, "ControlSet001\\Services\\intelide", "Start") == "0\n")
        #expect(try get(sys2, "ControlSet001\\Services\\storahci", "Start") == "0\n")
        #expect(try get(sys2, "ControlSet001\\Control\\CriticalDeviceDatabase\\pci#ven_8086&dev_7010", "Service") == "intelide\n")
        #expect(try get(sys2, "ControlSet001\\Control\\CriticalDeviceDatabase\\primary_ide_channel", "ClassGUID") == "{4D36E96A-E325-11CE-BFC1-08002BE10318}\n")
        let newMounted = RegistryType.dword(0x0B00_C0DE) + [0, 0, 0x10, 0, 0, 0, 0, 0]
        let h = try Hive(path: sys2, writable: false)
        #expect(h.value(h.node("MountedDevices")!, "\\DosDevices\\C:")?.data == newMounted)
        #expect(h.value(h.node("MountedDevices")!, "\\??\\Volume{0c0ffee0-0000-4000-8000-000000000001}")?.data == newMounted)
        let b = try Hive(path: bcd2, writable: false)
        for (obj, el) in [(Self.bootmgr, "11000001"), (Self.loader, "11000001"), (Self.loader, "21000001")] {
            #expect(b.value(b.node("Objects\\\(obj)\\Elements\\\(el)")!, "Element")?.data == Self.element(signature: 0x0B00_C0DE, offset: 1 << 20))
        }
        // Boot sector: hidden sectors now the partition's LBA; everything else in it unchanged.
        let oldBoot = try RawFile(path: base).read(at: 1 << 20, count: 512)
        let newBoot = try RawFile(path: disk).read(at: 1 << 20, count: 512)
        #expect(newBoot.le32(0x1C) == 2048 && oldBoot.le32(0x1C) == 63)
        #expect(Array(newBoot[0..<0x1C]) == Array(oldBoot[0..<0x1C]) && Array(newBoot[0x20...]) == Array(oldBoot[0x20...]))
        // The volume is still consistent and the untouched file reads the same.
        #expect(try Fixture.sh(["ntfscat", part, "/Windows/untouched.txt"]) == "left alone\n")
        let mnt = dir.appendingPathComponent("mnt").path
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        // The ntfs-3g daemon must not inherit our stdout pipe, or reading it never ends.
        let listing = try Fixture.sh(["sh", "-c", "ntfs-3g -o ro \"$0\" \"$1\" </dev/null >/dev/null 2>&1 || exit 9; ls \"$1/Windows/System32/config\"; umount \"$1\"", part, mnt])
        #expect(listing == "SYSTEM\n")
    }
}
