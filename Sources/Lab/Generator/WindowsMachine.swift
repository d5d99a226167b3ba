import Foundation
import Reconfigure

/// `os: windows-hives` machines: the registry side of a Windows installation, without Windows.
/// An NTFS volume (mkntfs, hidden sectors = the source partition start) holding
/// `Windows/System32/config/SYSTEM` and `Boot/BCD` hives that name the *source* disk (its MBR
/// signature, the partition's byte offset), behind a one-partition MBR (type 0x07) at the
/// scenario's partition start. Exposing it volume-only at another LBA on a disk with another
/// signature leaves every one of those values stale until the Windows reconfiguration rewrites
/// them; `WindowsHivesValidator` reads them back with hivex.
///
/// Determinism: the hives are built by our own writer (`MinimalHive` + hivex edits) from the
/// seed and are byte-identical between runs; mkntfs and ntfs-3g are not (random volume serial,
/// clock-stamped MFT records), so the volume is built once into
/// `$BOOTLAB_CACHE/windows-hives/<key>/volume.ntfs` and recorded as an external input, as the
/// debootstrapped Debian volume is: a rebuilt volume is drift naming the volume, never a
/// regression of this repository's code.
extension DiskGenerator {
    /// The `Boot Manager` object of every BCD store.
    public static let bcdBootManager = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}"

    /// What the generated hives say about the source disk (and what the reconfiguration must
    /// replace): derived from the scenario seed.
    public struct WindowsSource: Sendable, Equatable {
        public var signature: UInt32
        public var partitionOffset: UInt64
        public var loaderObject: String
        public var volumeGUID: String
    }

    static func windowsSource(_ machine: SourceMachine, seed: UInt64) -> WindowsSource {
        WindowsSource(signature: Digest.derivedBytes(seed: seed, "\(machine.name):disk-signature", count: 4).le32(0),
                      partitionOffset: machine.partitionStart * 512,
                      loaderObject: "{\(Digest.uuid(seed: seed, "\(machine.name):bcd-loader"))}",
                      volumeGUID: "{\(Digest.uuid(seed: seed, "\(machine.name):volume-guid"))}")
    }

    /// A BCD device element (`11000001`, `21000001`) for an MBR partition: device type 6
    /// (partition) at 0x10, the 0x48-byte device data length at 0x18, the partition's byte offset
    /// at 0x20, partition style 1 (MBR) at 0x38 and the disk signature at 0x3C.
    public static func bcdPartitionElement(signature: UInt32, offset: UInt64) -> [UInt8] {
        var e = [UInt8](repeating: 0, count: 0x58)
        func put(_ value: UInt64, at: Int, bytes: Int) { for i in 0..<bytes { e[at + i] = UInt8((value >> (8 * UInt64(i))) & 0xFF) } }
        put(6, at: 0x10, bytes: 4)
        put(0x48, at: 0x18, bytes: 4)
        put(offset, at: 0x20, bytes: 8)
        put(1, at: 0x38, bytes: 4)
        put(UInt64(signature), at: 0x3C, bytes: 4)
        return e
    }

    /// A `MountedDevices` value for an MBR volume: the disk signature then the byte offset.
    public static func mountedDevice(signature: UInt32, offset: UInt64) -> [UInt8] {
        RegistryType.dword(signature) + (0..<8).map { UInt8((offset >> (8 * UInt64($0))) & 0xFF) }
    }

    /// Writes the source machine's `SYSTEM` and `BCD` hives into `dir`. The storage services are
    /// those of an installation on an AHCI controller: storahci boot-start, atapi demand-start
    /// (3), no pvscsi, so every target's services need a change.
    static func writeWindowsHives(_ src: WindowsSource, into dir: URL) throws -> (system: URL, bcd: URL) {
        let device = mountedDevice(signature: src.signature, offset: src.partitionOffset)
        let system = dir.appendingPathComponent("SYSTEM")
        try Data(MinimalHive.bytes(rootName: "SYSTEM")).write(to: system)
        let h = try Hive(path: system.path)
        _ = try h.set(try h.ensureNode("Select"), "Current", type: RegistryType.dword, RegistryType.dword(1))
        let ahci = try h.ensureNode("ControlSet001\\Services\\storahci")
        _ = try h.set(ahci, "Start", type: RegistryType.dword, RegistryType.dword(0))
        _ = try h.set(ahci, "Group", type: RegistryType.sz, RegistryType.string("SCSI miniport"))
        _ = try h.set(try h.ensureNode("ControlSet001\\Services\\atapi"), "Start", type: RegistryType.dword, RegistryType.dword(3))
        _ = try h.ensureNode("ControlSet001\\Control\\CriticalDeviceDatabase")
        let md = try h.ensureNode("MountedDevices")
        _ = try h.set(md, "\\DosDevices\\C:", type: RegistryType.binary, device)
        _ = try h.set(md, "\\??\\Volume\(src.volumeGUID)", type: RegistryType.binary, device)
        try h.commit()

        let bcd = dir.appendingPathComponent("BCD")
        try Data(MinimalHive.bytes(rootName: "NewStoreRoot")).write(to: bcd)
        let b = try Hive(path: bcd.path)
        let element = bcdPartitionElement(signature: src.signature, offset: src.partitionOffset)
        for path in ["Objects\\\(bcdBootManager)\\Elements\\11000001", "Objects\\\(src.loaderObject)\\Elements\\11000001",
                     "Objects\\\(src.loaderObject)\\Elements\\21000001"] {
            _ = try b.set(try b.ensureNode(path), "Element", type: RegistryType.binary, element)
        }
        try b.commit()
        return (system, bcd)
    }

    /// The NTFS volume with the hives, built once per hive content (mkntfs is not reproducible).
    static func windowsVolume(_ machine: SourceMachine, hives: (system: URL, bcd: URL), marker: String) throws -> URL {
        let key = String(Digest.string([String(machine.volumeSize), String(machine.partitionStart),
                                        try Digest.file(hives.system), try Digest.file(hives.bcd), marker].joined(separator: "\n")).prefix(24))
        let dir = LabCache.root.appendingPathComponent("windows-hives/\(key)")
        let volume = dir.appendingPathComponent("volume.ntfs")
        let lock = lock(for: dir.path)
        lock.lock()
        defer { lock.unlock() }
        if FileManager.default.fileExists(atPath: volume.path) { return volume }
        guard getuid() == 0 else { throw LabError.missing("root", need: "ntfs-3g mounts the new NTFS volume (os: windows-hives) through FUSE") }
        let fm = FileManager.default
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        let work = dir.appendingPathComponent(".work-\(getpid())")
        try? fm.removeItem(at: work)
        try fm.createDirectory(at: work, withIntermediateDirectories: true)
        let mnt = work.appendingPathComponent("mnt")
        try fm.createDirectory(at: mnt, withIntermediateDirectories: true)
        defer {
            _ = try? Shell.run("umount", [mnt.path], check: false)
            try? fm.removeItem(at: work)
        }
        let part = work.appendingPathComponent("volume.ntfs")
        try createSparse(part, size: machine.volumeSize)
        try Shell.run("mkntfs", ["-F", "-f", "-q", "-p", String(machine.partitionStart), "-H", "255", "-S", "63", "-L", "BOOTLAB-WIN", part.path])
        try Shell.run("ntfs-3g", [part.path, mnt.path])
        var mounted = true
        defer { if mounted { _ = try? Shell.run("umount", [mnt.path], check: false) } }
        let config = mnt.appendingPathComponent("Windows/System32/config")
        try fm.createDirectory(at: config, withIntermediateDirectories: true)
        try fm.createDirectory(at: mnt.appendingPathComponent("Boot"), withIntermediateDirectories: true)
        try fm.copyItem(at: hives.system, to: config.appendingPathComponent("SYSTEM"))
        try fm.copyItem(at: hives.bcd, to: mnt.appendingPathComponent("Boot/BCD"))
        try Data((marker + "\n").utf8).write(to: mnt.appendingPathComponent("bootlab-marker.txt"))
        try Shell.run("umount", [mnt.path])
        mounted = false
        try fm.moveItem(at: part, to: volume)
        return volume
    }

    static func generateWindows(_ machine: SourceMachine, of scenario: Scenario, machines: URL) throws -> GeneratedMachine {
        let fm = FileManager.default
        let src = windowsSource(machine, seed: scenario.seed)
        // A scratch name only (parallel cells of one scenario generate at once); the contents are seeded.
        let hiveDir = machines.appendingPathComponent(".hives-\(machine.name)-\(getpid())-\(UUID().uuidString)")
        try? fm.removeItem(at: hiveDir)
        try fm.createDirectory(at: hiveDir, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: hiveDir) }
        let hives = try writeWindowsHives(src, into: hiveDir)
        let volume = try windowsVolume(machine, hives: hives, marker: machine.marker)

        var packages: [String: String] = [:]
        for package in ["ntfs-3g", "libhivex0", "syslinux-common"] {
            let out = try Shell.run("dpkg-query", ["-W", "-f=${Version}", package], check: false)
            guard out.status == 0, !out.stdout.isEmpty else {
                throw LabError.missing("the Debian package \(package)", need: "os: windows-hives machines are made with it (ci/packages/lab-windows.txt)")
            }
            packages[package] = out.stdout
        }
        struct Spec: Codable { var machine: SourceMachine; var seed: UInt64; var os: String; var system: String; var bcd: String }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let spec = Digest.string(String(decoding: try encoder.encode(Spec(machine: machine, seed: scenario.seed, os: "windows-hives",
                                                                        system: try Digest.file(hives.system), bcd: try Digest.file(hives.bcd))), as: UTF8.self))
        var external = ExternalInputs(packages: packages)
        try external.addFile("mkntfs volume (os windows-hives)", volume)
        try external.addFile("syslinux mbr.bin", URL(fileURLWithPath: mbrCodePath))
        let inputs = GeneratorInputs(spec: spec, external: external)
        let key = String(Digest.string(String(decoding: try encoder.encode(inputs), as: UTF8.self)).prefix(24))

        let lock = lock(for: machines.path + "/" + key)
        lock.lock()
        defer { lock.unlock() }
        let dir = machines.appendingPathComponent(key)
        let manifestURL = dir.appendingPathComponent("manifest.json")
        if let cached = cachedMachine(manifest: manifestURL) { return cached }
        let work = try freshWorkDirectory(machines: machines, key: key)
        defer { try? fm.removeItem(at: work) }
        let disk = work.appendingPathComponent("disk.raw")
        try createSparse(disk, size: machine.diskSize)
        let mbrCode = try Data(contentsOf: URL(fileURLWithPath: mbrCodePath))
        let mbr = MBRImage(bootCode: Array(mbrCode), signature: src.signature, partitionType: FileSystemKind.ntfs.partitionType,
                           startLBA: UInt32(machine.partitionStart), sectorCount: UInt32(machine.volumeSize / 512))
        try copy(bytes: mbr.bytes(), into: disk, at: 0)
        try copy(file: volume, into: disk, at: machine.partitionStart * 512)
        let result = GeneratedMachine(
            machine: machine.name,
            diskPath: dir.appendingPathComponent("disk.raw").path,
            volumePath: volume.path,
            diskDigest: try Digest.file(disk), volumeDigest: try Digest.file(volume),
            cacheKey: key, versions: ToolVersions(packages: packages), inputs: inputs, rootSpec: "",
            kernelRelease: "none (no Windows kernel)", modules: .init(files: [], builtin: [], absent: []))
        try? fm.removeItem(at: dir)
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        try fm.moveItem(at: disk, to: URL(fileURLWithPath: result.diskPath))
        let pretty = JSONEncoder()
        pretty.outputFormatting = [.sortedKeys, .prettyPrinted]
        try pretty.encode(result.versions).write(to: dir.appendingPathComponent("versions.json"))
        try pretty.encode(result).write(to: manifestURL)
        return result
    }
}
