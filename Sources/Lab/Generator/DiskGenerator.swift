import BlockCore
import Foundation

/// What the generator made for one source machine: its whole disk and its volume alone, both raw,
/// in the cache directory named by the hash of every input.
public struct GeneratedMachine: Sendable, Codable, Equatable {
    public var machine: String
    /// The source machine's whole disk (MBR, gap, partition at its original LBA).
    public var diskPath: String
    /// The partition's bytes alone (what a volume-only backup holds).
    public var volumePath: String
    public var diskDigest: String
    public var volumeDigest: String
    public var cacheKey: String
    /// Package versions, for information (`versions.json`); verdicts use `inputs`.
    public var versions: ToolVersions
    /// What the disk was made from: the repository's side (`spec`) and the outside world's.
    public var inputs: GeneratorInputs
    /// `UUID=…` as the guest's init looks the root up.
    public var rootSpec: String
    public var kernelRelease: String
    public var modules: ModuleResolver.Resolution
}

/// Everything a generated disk depends on, in two parts: what this repository decides (the
/// generator recipe, the machine spec, seed and module sets: `spec`) and what it takes from the
/// outside (`external`). Same inputs → same bytes; the golden validator relies on it.
public struct GeneratorInputs: Sendable, Codable, Equatable {
    public var recipe: Int
    /// SHA-256 of the canonical JSON of the machine spec, seed and resolved module sets.
    public var spec: String
    public var external: ExternalInputs

    public init(recipe: Int = ToolVersions.recipe, spec: String, external: ExternalInputs) {
        self.recipe = recipe
        self.spec = spec
        self.external = external
    }
}

/// Builds source disks deterministically: same scenario seed and inputs → same bytes.
public enum DiskGenerator {
    /// The fixed clock every generated timestamp uses (2020-09-13T12:26:40Z).
    static let fixedTime = 1_600_000_000
    static let keyLocks = Locked<[String: NSLock]>([:])

    /// One lock per cache entry: parallel cells needing the same machine build it once.
    static func lock(for path: String) -> NSLock {
        keyLocks.withLock { locks -> NSLock in
            if let l = locks[path] { return l }
            let l = NSLock()
            locks[path] = l
            return l
        }
    }

    /// `machinesDirectory` overrides where generated disks are cached (default
    /// `$BOOTLAB_CACHE/machines`); kernels are always shared under `LabCache.root`.
    public static func generate(_ machine: SourceMachine, of scenario: Scenario, suite: LabSuite,
                                machinesDirectory: URL? = nil) throws -> GeneratedMachine {
        let machines = machinesDirectory ?? LabCache.root.appendingPathComponent("machines")
        if machine.os?.isDebian == true {
            return try generateDebian(machine, of: scenario, suite: suite, machines: machines)
        }
        if machine.os == .windowsHives {
            return try generateWindows(machine, of: scenario, machines: machines)
        }
        let kernel = try LabCache.kernel(machine.kernel)
        let resolver = try ModuleResolver(kernel: kernel)
        var wanted = suite.initramfsModules(for: machine, in: scenario)
        wanted += filesystemModules(machine.filesystem)
        let modules = resolver.resolve(wanted)
        let volumeModules = resolver.resolve(suite.volumeModules(for: machine, in: scenario))

        var packages = try ToolVersions.host()
        packages[kernel.package] = kernel.version
        let versions = ToolVersions(packages: packages)
        let inputs = try collectInputs(machine, seed: scenario.seed, kernel: kernel, packages: packages,
                                       modules: modules, volumeModules: volumeModules)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let key = String(Digest.string(String(decoding: try encoder.encode(inputs), as: UTF8.self)).prefix(24))

        let lockKey = machines.path + "/" + key
        let lock = keyLocks.withLock { locks -> NSLock in
            if let l = locks[lockKey] { return l }
            let l = NSLock()
            locks[lockKey] = l
            return l
        }
        lock.lock()
        defer { lock.unlock() }

        let dir = machines.appendingPathComponent(key)
        let manifestURL = dir.appendingPathComponent("manifest.json")
        if let cached = cachedMachine(manifest: manifestURL) { return cached }

        let fm = FileManager.default
        let work = try freshWorkDirectory(machines: machines, key: key)
        defer { try? fm.removeItem(at: work) }

        let volume = work.appendingPathComponent("volume.raw")
        let disk = work.appendingPathComponent("disk.raw")
        let rootSpec: String
        let tree = work.appendingPathComponent("tree")
        let initrdName = "initrd.img"
        let cpio = try Initramfs.build(busybox: URL(fileURLWithPath: busyboxPath), kernel: kernel, modules: modules,
                                       rootSpec: "UUID=\(rootUUID(machine, seed: scenario.seed))", fstype: machine.filesystem.linuxType)
        let cpioURL = work.appendingPathComponent("initrd.cpio")
        try Data(cpio).write(to: cpioURL)
        // gzip -n stores no name or time; compressed data also leaves no zero blocks, which
        // mke2fs -d would turn into holes and extlinux cannot read through.
        try Shell.run("gzip", ["-n", "-9", cpioURL.path])
        let initrd = work.appendingPathComponent("initrd.cpio.gz")
        // no_timer_check: on a loaded host, TCG's emulated timer can miss the kernel's IO-APIC
        // check ("IO-APIC + timer doesn't work!" and a panic in the first 30 ms, seen with
        // load average 30 on 2 cores); the check proves nothing about the disk under test.
        let bootConfig = """
            SERIAL 0 115200
            DEFAULT linux
            PROMPT 0
            TIMEOUT 0
            LABEL linux
              KERNEL /boot/vmlinuz
              INITRD /boot/\(initrdName)
              APPEND console=ttyS0 panic=-1 no_timer_check

            """

        // The full storage module set on the volume (what the reconfiguration engine draws from).
        let moduleTree = work.appendingPathComponent("modules")
        let release = moduleTree.appendingPathComponent("lib/modules/\(kernel.release)")
        for file in volumeModules.files {
            let dst = release.appendingPathComponent(file)
            try fm.createDirectory(at: dst.deletingLastPathComponent(), withIntermediateDirectories: true)
            try fm.copyItem(at: kernel.modulesDirectory.appendingPathComponent(file), to: dst)
        }
        try fm.createDirectory(at: release, withIntermediateDirectories: true)
        try Data(try resolver.dependencyLines(for: volumeModules.files, kernel: kernel).utf8)
            .write(to: release.appendingPathComponent("modules.dep"))
        try Shell.run("find", [moduleTree.path, "-exec", "touch", "-h", "-d", "@\(fixedTime)", "{}", "+"])

        try createSparse(volume, size: machine.volumeSize)
        switch machine.filesystem {
        case .ext4:
            try fm.createDirectory(at: tree, withIntermediateDirectories: true)
            try fm.copyItem(at: moduleTree.appendingPathComponent("lib"), to: tree.appendingPathComponent("lib"))
            rootSpec = "UUID=\(rootUUID(machine, seed: scenario.seed))"
            try fm.createDirectory(at: tree.appendingPathComponent("bootlab"), withIntermediateDirectories: true)
            try fm.createDirectory(at: tree.appendingPathComponent("boot"), withIntermediateDirectories: true)
            try fm.copyItem(at: kernel.vmlinuz, to: tree.appendingPathComponent("boot/vmlinuz"))
            try fm.copyItem(at: initrd, to: tree.appendingPathComponent("boot/\(initrdName)"))
            if machine.isUEFI {
                // What grub-efi-amd64-bin installs, and the grub.cfg update-grub would write for it.
                try fm.createDirectory(at: tree.appendingPathComponent("boot/grub"), withIntermediateDirectories: true)
                try fm.createDirectory(at: tree.appendingPathComponent("usr/lib/grub"), withIntermediateDirectories: true)
                try fm.copyItem(at: URL(fileURLWithPath: grubEFIModules), to: tree.appendingPathComponent("usr/lib/grub/x86_64-efi"))
                try Data(Self.grubConfig(initrdName: initrdName).utf8).write(to: tree.appendingPathComponent("boot/grub/grub.cfg"))
            } else {
                try fm.createDirectory(at: tree.appendingPathComponent("boot/extlinux"), withIntermediateDirectories: true)
                try Data(bootConfig.utf8).write(to: tree.appendingPathComponent("boot/extlinux/extlinux.conf"))
            }
            try Data((machine.marker + "\n").utf8).write(to: tree.appendingPathComponent("bootlab/marker"))
            try buildExt4(volume: volume, tree: tree, work: work, machine: machine, seed: scenario.seed)
        case .fat32:
            rootSpec = "UUID=\(rootUUID(machine, seed: scenario.seed))"
            try buildFAT32(volume: volume, work: work, machine: machine, seed: scenario.seed,
                           kernel: kernel.vmlinuz, initrd: initrd, initrdName: initrdName, config: bootConfig,
                           moduleTree: moduleTree)
        case .ntfs:
            throw LabError.argument("filesystem", reason: "ntfs volumes are made by os: windows-hives machines only")
        }

        try createSparse(disk, size: machine.diskSize)
        if machine.isUEFI {
            try buildUEFIDisk(disk: disk, volume: volume, work: work, machine: machine, seed: scenario.seed)
        } else {
            let mbrCode = try Data(contentsOf: URL(fileURLWithPath: mbrCodePath))
            let signature = Digest.derivedBytes(seed: scenario.seed, "\(machine.name):disk-signature", count: 4).le32(0)
            let mbr = MBRImage(bootCode: Array(mbrCode), signature: signature, partitionType: machine.filesystem.partitionType,
                               startLBA: UInt32(machine.partitionStart), sectorCount: UInt32(machine.volumeSize / 512))
            try copy(bytes: mbr.bytes(), into: disk, at: 0)
        }
        try copy(file: volume, into: disk, at: machine.partitionStart * UInt64(machine.sectorSize))

        let result = GeneratedMachine(
            machine: machine.name,
            diskPath: dir.appendingPathComponent("disk.raw").path,
            volumePath: dir.appendingPathComponent("volume.raw").path,
            diskDigest: try Digest.file(disk), volumeDigest: try Digest.file(volume),
            cacheKey: key, versions: versions, inputs: inputs, rootSpec: rootSpec, kernelRelease: kernel.release, modules: modules)
        try? fm.removeItem(at: dir)
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        try fm.moveItem(at: disk, to: URL(fileURLWithPath: result.diskPath))
        try fm.moveItem(at: volume, to: URL(fileURLWithPath: result.volumePath))
        let pretty = JSONEncoder()
        pretty.outputFormatting = [.sortedKeys, .prettyPrinted]
        try pretty.encode(versions).write(to: dir.appendingPathComponent("versions.json"))
        try pretty.encode(result).write(to: manifestURL)
        return result
    }

    /// The generator's inputs: the spec it was asked for, and every file it will read from
    /// Debian's packages (kernel image and modules, busybox, mbr.bin, the mkfs and boot-loader
    /// installers, gzip), by digest.
    static func collectInputs(_ machine: SourceMachine, seed: UInt64, kernel: KernelTree, packages: [String: String],
                              modules: ModuleResolver.Resolution, volumeModules: ModuleResolver.Resolution) throws -> GeneratorInputs {
        struct Spec: Codable {
            var machine: SourceMachine; var seed: UInt64
            var modules: ModuleResolver.Resolution; var volumeModules: ModuleResolver.Resolution
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let spec = Digest.string(String(decoding: try encoder.encode(Spec(machine: machine, seed: seed, modules: modules,
                                                                           volumeModules: volumeModules)), as: UTF8.self))
        var external = ExternalInputs(packages: packages)
        // Labels name the flavour, not the package: a new kernel ABI shows as one changed line.
        try external.addFile("kernel image (\(kernel.flavour.rawValue))", kernel.vmlinuz)
        let moduleFiles = Set(modules.files + volumeModules.files).sorted()
        external.files["kernel modules (\(kernel.flavour.rawValue))"] = ExternalInputs.combined(
            try moduleFiles.map { ($0, try Digest.file(kernel.modulesDirectory.appendingPathComponent($0))) })
        try external.addFile("busybox", URL(fileURLWithPath: busyboxPath))
        try external.addFile("syslinux mbr.bin", URL(fileURLWithPath: mbrCodePath))
        for tool in ["mke2fs", "debugfs", "tune2fs", "extlinux", "mkfs.fat", "mcopy", "syslinux", "gzip"] {
            try external.addTool(tool)
        }
        if machine.isUEFI {
            // Only UEFI machines read these: other machines' inputs (and cache keys) stay as they were.
            let mods = URL(fileURLWithPath: grubEFIModules)
            // Every regular file under it (monolithic/ holds the prebuilt images), by relative path.
            var names: [String] = []
            if let walker = FileManager.default.enumerator(atPath: mods.path) {
                while let rel = walker.nextObject() as? String {
                    var isDir: ObjCBool = false
                    if FileManager.default.fileExists(atPath: mods.appendingPathComponent(rel).path, isDirectory: &isDir), !isDir.boolValue { names.append(rel) }
                }
            }
            names.sort()
            external.files["grub x86_64-efi modules"] = ExternalInputs.combined(
                try names.map { ($0, try Digest.file(mods.appendingPathComponent($0))) })
            for tool in ["grub-mkimage", "sgdisk", "mmd"] { try external.addTool(tool) }
        }
        return GeneratorInputs(spec: spec, external: external)
    }

    /// Debian's grub-efi-amd64-bin: what a UEFI machine's root volume carries and its ESP's loader is built from.
    static let grubEFIModules = "/usr/lib/grub/x86_64-efi"

    /// The grub.cfg of a UEFI machine's root (what update-grub writes, reduced to one entry).
    static func grubConfig(initrdName: String) -> String {
        """
        set timeout=0
        set default=0
        menuentry "bootlab" {
          linux /boot/vmlinuz console=ttyS0 panic=-1
          initrd /boot/\(initrdName)
        }

        """
    }

    /// The GPT of a UEFI machine, made by sgdisk (not by BootLab's GPT writer): the ESP as
    /// partition 1 (mkfs.fat, mtools, a GRUB EFI image from the host's grub-mkimage with an
    /// embedded config that finds the root by UUID), the root as partition 2. Disk and partition
    /// GUIDs, the ESP's serial: from the seed.
    static func buildUEFIDisk(disk: URL, volume: URL, work: URL, machine: SourceMachine, seed: UInt64) throws {
        let g = uefiGUIDs(machine, seed: seed)
        // A 4Kn machine (docs/uefi.md, "4 KiB sectors"): LBAs count 4096-byte sectors, sgdisk works
        // through a loop device with 4096-byte blocks (it assumes 512 on a plain file), and the
        // ESP is FAT32 with 4096-byte sectors (mkfs.fat -S 4096), 260 MiB.
        let ss = UInt64(machine.sectorSize)
        let espStart = machine.espStart, espEnd = machine.espStart + machine.espSectorCount - 1
        let rootEnd = machine.partitionStart + machine.volumeSize / ss - 1
        try GPTImage.withDevice(disk.path, sectorSize: machine.sectorSize) { dev in
            try Shell.run("sgdisk", ["--disk-guid=\(g.disk)",
                                     "-n", "1:\(espStart):\(espEnd)", "-t", "1:EF00", "-u", "1:\(g.esp)", "-c", "1:EFI System",
                                     "-n", "2:\(machine.partitionStart):\(rootEnd)", "-t", "2:8300", "-u", "2:\(g.root)", "-c", "2:bootlab root",
                                     dev])
        }
        let cfg = work.appendingPathComponent("esp-load.cfg")
        try Data("""
            search.fs_uuid \(rootUUID(machine, seed: seed)) root
            set prefix=($root)/usr/lib/grub
            normal ($root)/boot/grub/grub.cfg

            """.utf8).write(to: cfg)
        let loader = work.appendingPathComponent("BOOTX64.EFI")
        try Shell.run("grub-mkimage", ["-O", "x86_64-efi", "-d", grubEFIModules, "-c", cfg.path, "-p", "/EFI/BOOT", "-o", loader.path,
                                       "part_gpt", "fat", "ext2", "search_fs_uuid", "normal", "configfile", "linux", "echo", "test", "gzio"])
        let esp = work.appendingPathComponent("esp.img")
        try createSparse(esp, size: machine.espSectorCount * ss)
        let env = ["SOURCE_DATE_EPOCH": String(fixedTime), "MTOOLS_SKIP_CHECK": "1"]
        let sectorArgs = ss == 512 ? [] : ["-S", String(ss), "-s", "1"]
        try Shell.run("mkfs.fat", ["--invariant", "-i", espVolumeID(machine, seed: seed),
                                   "-F", "32"] + sectorArgs + ["-h", String(espStart), "-n", "EFI", esp.path], environment: env)
        try Shell.run("mmd", ["-i", esp.path, "::/EFI", "::/EFI/BOOT"], environment: env)
        try Shell.run("mcopy", ["-i", esp.path, loader.path, "::/EFI/BOOT/BOOTX64.EFI"], environment: env)
        try Shell.run("fsck.fat", ["-n", esp.path])
        try copy(file: esp, into: disk, at: espStart * ss)
    }

    /// The FAT volume ID (8 hex digits) of a UEFI machine's source ESP, from the seed; an
    /// `os: debian-uefi` volume's fstab names it (`UUID=XXXX-XXXX /boot/efi`).
    static func espVolumeID(_ machine: SourceMachine, seed: UInt64) -> String {
        Digest.derivedBytes(seed: seed, "\(machine.name):esp-volume-id", count: 4).hex
    }

    /// A UEFI machine's GPT identities (the lab's own derivation, from the seed).
    static func uefiGUIDs(_ machine: SourceMachine, seed: UInt64) -> (disk: String, esp: String, root: String) {
        (Digest.uuid(seed: seed, "\(machine.name):gpt-disk"), Digest.uuid(seed: seed, "\(machine.name):gpt-esp"),
         Digest.uuid(seed: seed, "\(machine.name):gpt-root"))
    }

    static let busyboxPath = "/bin/busybox"
    static let mbrCodePath = "/usr/lib/syslinux/mbr/mbr.bin"

    static func filesystemModules(_ fs: FileSystemKind) -> [String] {
        switch fs {
        // ext4 refuses to mount without crc32c (metadata_csum); the cloud kernel has it built in.
        case .ext4: return ["crc32c_generic", "crc16", "mbcache", "jbd2", "ext4"]
        case .fat32: return ["nls_cp437", "nls_ascii", "nls_utf8", "fat", "vfat"]
        case .ntfs: return []
        }
    }

    static func rootUUID(_ machine: SourceMachine, seed: UInt64) -> String {
        switch machine.filesystem {
        case .ext4: return Digest.uuid(seed: seed, "\(machine.name):fs-uuid")
        case .fat32:
            let h = volumeID(machine, seed: seed).uppercased()
            return "\(h.prefix(4))-\(h.suffix(4))"
        case .ntfs: return ""
        }
    }

    static func volumeID(_ machine: SourceMachine, seed: UInt64) -> String {
        Digest.derivedBytes(seed: seed, "\(machine.name):fat-volume-id", count: 4).hex
    }

    static func buildExt4(volume: URL, tree: URL, work: URL, machine: SourceMachine, seed: UInt64) throws {
        guard getuid() == 0 else { throw LabError.missing("root", need: "ext4 + extlinux generation installs extlinux through a loop mount") }
        let t = String(fixedTime)
        try Shell.run("find", [tree.path, "-exec", "touch", "-h", "-d", "@\(t)", "{}", "+"])
        let env = ["E2FSPROGS_FAKE_TIME": t]
        // Made without a journal: the kernel's journal commit blocks would carry the wall clock.
        // The journal is added after extlinux is installed, by tune2fs under the fake clock.
        try Shell.run("mke2fs", ["-q", "-F", "-t", "ext4", "-b", "4096", "-O", "^has_journal",
                                 "-U", rootUUID(machine, seed: seed),
                                 "-E", "hash_seed=\(Digest.uuid(seed: seed, "\(machine.name):hash-seed")),lazy_itable_init=0,root_owner=0:0",
                                 "-L", "bootlab", "-d", tree.path, volume.path], environment: env)
        // ext4 records the mount point in the superblock's 64-byte s_last_mounted at the first file
        // open (ext4_sample_last_mounted), unless the path does not fit that buffer. A mount point
        // of 64 bytes or more keeps the field empty, so the volume's bytes depend neither on where
        // $BOOTLAB_CACHE is nor on this process's pid (debugfs `ssv last_mounted ""` below clears
        // only its first byte).
        var mnt = work.appendingPathComponent("mnt")
        let shortBy = 64 - mnt.path.utf8.count
        if shortBy > 0 { mnt = work.appendingPathComponent("mnt" + String(repeating: "_", count: shortBy)) }
        if !machine.isUEFI {
            try FileManager.default.createDirectory(at: mnt, withIntermediateDirectories: true)
            try Shell.run("mount", ["-o", "loop,noinit_itable", volume.path, mnt.path])
            do {
                try Shell.run("extlinux", ["--install", mnt.appendingPathComponent("boot/extlinux").path])
            } catch {
                _ = try? Shell.run("umount", [mnt.path])
                throw error
            }
            try Shell.run("umount", [mnt.path])
        }
        // The mount stamped times, generation numbers and i_version on what extlinux touched,
        // and the superblock's mount fields: reset them all to fixed values.
        var commands: [String] = []
        // mke2fs -d also copies each source file's ctime, which touch cannot set: reset every path.
        var paths = ["/", "/lost+found"] + (machine.isUEFI ? [] : ["/boot/extlinux/ldlinux.sys", "/boot/extlinux/ldlinux.c32"])
        if let walker = FileManager.default.enumerator(atPath: tree.path) {
            while let rel = walker.nextObject() as? String { paths.append("/" + rel) }
        }
        for path in paths.sorted() {
            for field in ["atime", "mtime", "ctime", "crtime"] {
                commands.append("sif \(path) \(field) \(t)")
                commands.append("sif \(path) \(field)_extra 0")
            }
            commands.append("sif \(path) generation 0")
            commands.append("sif \(path) version 1")
        }
        for field in ["mtime", "wtime", "lastcheck"] { commands.append("ssv \(field) \(t)") }
        commands += ["ssv last_mounted \"\"", "ssv mnt_count 0", "ssv kbytes_written 0"]
        let script = work.appendingPathComponent("debugfs.cmds")
        try Data((commands.joined(separator: "\n") + "\n").utf8).write(to: script)
        let out = try Shell.run("debugfs", ["-w", "-f", script.path, volume.path], environment: env)
        if out.stderr.contains("Couldn't") || out.stdout.contains("Couldn't") {
            throw LabError.tool("debugfs", reason: "normalisation failed: \(out.stdout + out.stderr)")
        }
        try Shell.run("tune2fs", ["-O", "has_journal", volume.path], environment: env)
        try Shell.run("e2fsck", ["-f", "-n", volume.path], environment: env)
    }

    static func buildFAT32(volume: URL, work: URL, machine: SourceMachine, seed: UInt64,
                           kernel: URL, initrd: URL, initrdName: String, config: String, moduleTree: URL) throws {
        let env = ["SOURCE_DATE_EPOCH": String(fixedTime), "MTOOLS_SKIP_CHECK": "1"]
        // --invariant fixes mkfs.fat's clock-derived fields; -i after it sets our volume ID.
        try Shell.run("mkfs.fat", ["--invariant", "-i", volumeID(machine, seed: seed), "-F", "32", "-s", "1",
                                   "-h", String(machine.partitionStart), "-n", "BOOTLAB", volume.path], environment: env)
        let cfg = work.appendingPathComponent("syslinux.cfg")
        try Data(config.utf8).write(to: cfg)
        let marker = work.appendingPathComponent("marker")
        try Data((machine.marker + "\n").utf8).write(to: marker)
        let img = volume.path
        try Shell.run("mmd", ["-i", img, "::/boot", "::/bootlab"], environment: env)
        for (src, dst) in [(kernel.path, "::/boot/vmlinuz"), (initrd.path, "::/boot/\(initrdName)"),
                           (cfg.path, "::/syslinux.cfg"), (marker.path, "::/bootlab/marker")] {
            try Shell.run("mcopy", ["-i", img, src, dst], environment: env)
        }
        try Shell.run("mcopy", ["-s", "-i", img, moduleTree.appendingPathComponent("lib").path, "::/"], environment: env)
        try Shell.run("syslinux", ["--install", img], environment: env)
        try Shell.run("fsck.fat", ["-n", img])
    }

    static func createSparse(_ url: URL, size: UInt64) throws {
        guard FileManager.default.createFile(atPath: url.path, contents: nil) else { throw LabError.file(path: url.path, reason: "cannot create it") }
        let handle = try FileHandle(forWritingTo: url)
        try handle.truncate(atOffset: size)
        try handle.close()
    }

    static func copy(bytes: [UInt8], into url: URL, at offset: UInt64) throws {
        let handle = try FileHandle(forWritingTo: url)
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: Data(bytes))
        try handle.close()
    }

    /// Copies a file's data into another at an offset, skipping all-zero chunks (stays sparse).
    static func copy(file: URL, into url: URL, at offset: UInt64) throws {
        let input = try FileHandle(forReadingFrom: file)
        let output = try FileHandle(forWritingTo: url)
        defer { try? input.close(); try? output.close() }
        var position: UInt64 = 0
        while let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty {
            if chunk.contains(where: { $0 != 0 }) {
                try output.seek(toOffset: offset + position)
                try output.write(contentsOf: chunk)
            }
            position += UInt64(chunk.count)
        }
    }
}

extension DiskGenerator {
    /// The cache's machine behind MANIFEST when it is complete (manifest and disk both there):
    /// the one rule every machine kind (tiny Linux, Debian, Windows hives) uses to reuse an entry.
    static func cachedMachine(manifest: URL) -> GeneratedMachine? {
        guard let data = try? Data(contentsOf: manifest),
              let cached = try? JSONDecoder().decode(GeneratedMachine.self, from: data),
              FileManager.default.fileExists(atPath: cached.diskPath) else { return nil }
        return cached
    }

    /// An empty scratch directory for building the machine KEY in this process (a stale one from
    /// a killed run is removed first); the caller removes it when done.
    static func freshWorkDirectory(machines: URL, key: String) throws -> URL {
        let work = machines.appendingPathComponent(".work-\(key)-\(getpid())")
        try? FileManager.default.removeItem(at: work)
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        return work
    }
}
