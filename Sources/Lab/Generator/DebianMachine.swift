import Foundation

/// `os: debian-grub` machines: a real distribution in the lab. The volume is the debootstrapped
/// Debian 12 that `Scenarios/machines/make-debian-grub.sh` builds once into
/// `$BOOTLAB_CACHE/debian-grub/<key>/` (minbase + cloud kernel + systemd + initramfs-tools +
/// grub-pc-bin, `grub.cfg` and fstab by UUID, a oneshot unit printing
/// `BOOTLAB-MARKER debian-grub booted` on ttyS0); the reconfiguration unit tests use the same
/// script. The source disk is that volume behind syslinux's generic `mbr.bin` at the scenario's
/// partition start: no GRUB boot code anywhere, as a volume-only backup of a GRUB machine has none.
///
/// `os: debian-uefi` machines: the volume `Scenarios/machines/make-debian-uefi.sh` builds into
/// `$BOOTLAB_CACHE/debian-uefi/<key>/` (grub-efi-amd64-bin instead of grub-pc-bin, fstab with a
/// `/boot/efi` vfat entry), given the root UUID and the ESP's volume ID the lab derives from the
/// seed for every UEFI machine; the source disk is the GPT + ESP of `buildUEFIDisk` (sgdisk,
/// mkfs.fat, a GRUB EFI loader finding the root by UUID) with the volume as partition 2.
extension DiskGenerator {
    /// The script's volume size.
    public static let debianVolumeSize: UInt64 = 512 << 20

    static func generateDebian(_ machine: SourceMachine, of scenario: Scenario, suite: LabSuite, machines: URL) throws -> GeneratedMachine {
        let os = machine.os ?? .debianGrub
        let scriptName = "make-\(os.rawValue).sh"
        let script = suite.directory.appendingPathComponent("machines/\(scriptName)")
        guard FileManager.default.fileExists(atPath: script.path) else {
            throw LabError.file(path: script.path, reason: "missing: os \(os.rawValue) machines are built by it")
        }
        guard getuid() == 0 else { throw LabError.missing("root", need: "debootstrap (os: \(os.rawValue)) runs as root") }
        // The UEFI install's fstab names the ESP buildUEFIDisk makes; its root UUID is the one
        // every UEFI machine's ESP loader and the gpt-esp validator look for.
        let arguments = machine.isUEFI ? [rootUUID(machine, seed: scenario.seed).lowercased(), espVolumeID(machine, seed: scenario.seed)] : []
        // Cached after the first run (~50 s debootstrap + mke2fs); the script holds a lock.
        let out = try Shell.run("bash", [script.path] + arguments, environment: ["BOOTLAB_CACHE": LabCache.root.path])
        guard let volumePath = out.stdout.split(separator: "\n").last.map(String.init), FileManager.default.fileExists(atPath: volumePath) else {
            throw LabError.tool(scriptName, reason: "printed no volume path: \(out.stdout.suffix(300)) \(out.stderr.suffix(300))")
        }
        let fixture = URL(fileURLWithPath: volumePath).deletingLastPathComponent()
        let volume = URL(fileURLWithPath: volumePath)
        let size = try FileManager.default.attributesOfItem(atPath: volumePath)[.size] as? UInt64 ?? 0
        guard size == machine.volumeSize else {
            throw LabError.file(path: volumePath, reason: "is \(size) bytes, the scenario says volume_size \(machine.volumeSize)")
        }
        let release = try String(contentsOf: fixture.appendingPathComponent("kernel-version"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let uuid = try Shell.run("blkid", ["-p", "-o", "value", "-s", "UUID", volumePath]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)

        // Package versions as the script recorded them (`name version` lines).
        var packages: [String: String] = [:]
        let versionsText = (try? String(contentsOf: fixture.appendingPathComponent("versions.txt"), encoding: .utf8)) ?? ""
        for line in versionsText.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            if parts.count == 2 { packages[parts[0]] = parts[1] }
        }
        // The debootstrapped volume is an external input in itself: debootstrap's output is not
        // byte-reproducible, so a rebuilt volume (another machine, a cleared cache) is drift with
        // the volume named, never a regression of this repository's code.
        struct Spec: Codable { var machine: SourceMachine; var seed: UInt64; var os: String }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let spec = Digest.string(String(decoding: try encoder.encode(Spec(machine: machine, seed: scenario.seed, os: os.rawValue)), as: UTF8.self))
        var external = ExternalInputs(packages: packages)
        try external.addFile("debootstrapped Debian volume", volume)
        try external.addFile(scriptName, script)
        if machine.isUEFI {
            // buildUEFIDisk's loader: the host's grub-mkimage and modules, sgdisk, mkfs.fat, mtools.
            try external.addFile("grub x86_64-efi kernel.img", URL(fileURLWithPath: grubEFIModules + "/kernel.img"))
            for tool in ["grub-mkimage", "sgdisk", "mkfs.fat", "mmd", "mcopy"] { try external.addTool(tool) }
        } else {
            try external.addFile("syslinux mbr.bin", URL(fileURLWithPath: mbrCodePath))
        }
        let inputs = GeneratorInputs(spec: spec, external: external)
        let key = String(Digest.string(String(decoding: try encoder.encode(inputs), as: UTF8.self)).prefix(24))

        let lock = lock(for: machines.path + "/" + key)
        lock.lock()
        defer { lock.unlock() }
        let dir = machines.appendingPathComponent(key)
        let manifestURL = dir.appendingPathComponent("manifest.json")
        if let cached = cachedMachine(manifest: manifestURL) { return cached }
        let fm = FileManager.default
        let work = try freshWorkDirectory(machines: machines, key: key)
        defer { try? fm.removeItem(at: work) }
        let disk = work.appendingPathComponent("disk.raw")
        try createSparse(disk, size: machine.diskSize)
        if machine.isUEFI {
            try buildUEFIDisk(disk: disk, volume: volume, work: work, machine: machine, seed: scenario.seed)
        } else {
            let mbrCode = try Data(contentsOf: URL(fileURLWithPath: mbrCodePath))
            let signature = Digest.derivedBytes(seed: scenario.seed, "\(machine.name):disk-signature", count: 4).le32(0)
            let mbr = MBRImage(bootCode: Array(mbrCode), signature: signature, partitionType: FileSystemKind.ext4.partitionType,
                               startLBA: UInt32(machine.partitionStart), sectorCount: UInt32(machine.volumeSize / 512))
            try copy(bytes: mbr.bytes(), into: disk, at: 0)
        }
        try copy(file: volume, into: disk, at: machine.partitionStart * 512)
        let result = GeneratedMachine(
            machine: machine.name,
            diskPath: dir.appendingPathComponent("disk.raw").path,
            volumePath: volumePath,
            diskDigest: try Digest.file(disk), volumeDigest: try Digest.file(volume),
            cacheKey: key, versions: ToolVersions(packages: packages), inputs: inputs, rootSpec: "UUID=\(uuid)",
            kernelRelease: release, modules: .init(files: [], builtin: [], absent: []))
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
