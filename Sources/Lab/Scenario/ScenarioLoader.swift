import Foundation
import Yams

/// Reads scenario and target YAML into the model, rejecting anything unknown or inconsistent
/// with a `ScenarioError` naming file, key and reason.
public enum ScenarioLoader {
    public static func parseTarget(yaml: String, file: String) throws -> Target {
        let top = try YAMLMapping(file: file, path: "", node: try loadYAML(yaml, file: file))
        let name = try top.string("name")
        try checkName(name, file: file, top: top)
        let controller = try top.mapping("controller") ?? { throw top.error("controller", "required key is missing") }()
        let kind = try controller.string("kind")
        let driver = try controller.string("driver")
        try controller.finish()
        let qemu = try top.stringList("qemu")
        guard qemu.contains(where: { $0.contains("{drive}") }) else {
            throw top.error("qemu", "no argument contains {drive}: the disk would never be attached")
        }
        let modules = try top.stringList("modules")
        guard modules.contains(driver) else {
            throw top.error("modules", "does not load the controller's driver '\(driver)'")
        }
        let requires: KernelFlavour? = top.has("requires_kernel") ? try top.choice("requires_kernel") as KernelFlavour : nil
        _ = top.raw("requires_kernel")
        let memory = try top.optionalSize("memory") ?? 256 * 1024 * 1024
        var formatOptions: [String: String] = [:]
        if let o = try top.mapping("native_format_options") {
            for key in o.keys { formatOptions[key] = try o.string(key) }
            try o.finish()
        }
        var target = Target(
            name: name,
            summary: try top.optionalString("description") ?? "",
            nativeFormat: try top.string("native_format"),
            machine: try top.string("machine"),
            firmware: try top.optionalString("firmware") ?? "seabios",
            controller: .init(kind: kind, driver: driver),
            qemuArguments: qemu,
            modules: modules,
            requiresKernel: requires,
            memoryMiB: Int(memory / (1024 * 1024)),
            notes: try top.optionalString("notes") ?? "",
            file: file
        )
        target.formatOptions = formatOptions
        if let r = try top.mapping("boot_runner") {
            target.bootRunner = try parseBootRunner(r)
        }
        if let n = try top.mapping("nic") {
            let nic = Target.NIC(model: try n.string("model"), driver: try n.string("driver"),
                                 pciID: try n.string("pci_id"), modules: try n.stringList("modules"))
            guard nic.modules.contains(nic.driver) else {
                throw n.error("modules", "does not load the adapter's driver '\(nic.driver)'")
            }
            guard nic.pciID.range(of: "^[0-9a-f]{4}:[0-9a-f]{4}$", options: .regularExpression) != nil else {
                throw n.error("pci_id", "'\(nic.pciID)' is not vendor:device in lower-case hex (e.g. 8086:100e)")
            }
            guard nic.model.range(of: "^[a-z0-9_-]+$", options: .regularExpression) != nil else {
                throw n.error("model", "'\(nic.model)' is not a QEMU NIC model name")
            }
            try n.finish()
            target.nic = nic
        }
        guard ["pc", "q35"].contains(target.machine) else {
            throw top.error("machine", "'\(target.machine)' is not pc (i440fx) or q35")
        }
        guard BootRunner.firmwares.contains(target.firmware) else {
            throw top.error("firmware", "'\(target.firmware)' is not one of: \(BootRunner.firmwares.joined(separator: ", "))")
        }
        // OVMF's pflash layout and SMM-free build are what BootRunner sets up for q35.
        if target.firmware == "ovmf", target.machine != "q35" {
            throw top.error("firmware", "ovmf targets use machine q35")
        }
        try top.finish()
        return target
    }

    /// `boot_runner: {command: [...], console: file|stdout, timeout: 300}`.
    static func parseBootRunner(_ r: YAMLMapping) throws -> CustomBootRunner {
        let command = try r.stringList("command")
        guard !command.isEmpty else { throw r.error("command", "is empty: name the program that boots the disk") }
        guard command.contains(where: { $0.contains("{disk}") }) else {
            throw r.error("command", "no argument contains {disk}: the runner would never see the disk")
        }
        for arg in command {
            var rest = Substring(arg)
            while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
                let name = String(rest[open...close])
                guard CustomBootRunner.placeholders.contains(name) else {
                    throw r.error("command", "unknown placeholder \(name) (known: \(CustomBootRunner.placeholders.joined(separator: " ")))")
                }
                rest = rest[rest.index(after: close)...]
            }
        }
        let console: CustomBootRunner.Console = try r.choice("console")
        if console == .file, !command.contains(where: { $0.contains("{console}") }) {
            throw r.error("console", "is 'file' but no argument contains {console}: the runner cannot know where to write it")
        }
        var timeout: Double?
        if let raw = r.raw("timeout") {
            guard let n = (raw as? Int).map(Double.init) ?? (raw as? Double), n > 0 else {
                throw r.error("timeout", "expected a positive number of seconds, found \(YAMLMapping.describe(raw))")
            }
            timeout = n
        }
        try r.finish()
        return CustomBootRunner(command: command, console: console, timeout: timeout)
    }

    /// Parses one scenario and checks it against the known targets.
    public static func parseScenario(yaml: String, file: String, targets: [String: Target]) throws -> Scenario {
        let top = try YAMLMapping(file: file, path: "", node: try loadYAML(yaml, file: file))
        let name = try top.string("name")
        try checkName(name, file: file, top: top)
        let seedValue = try top.integer("seed")
        guard seedValue >= 0 else { throw top.error("seed", "must not be negative") }

        var machines: [SourceMachine] = []
        if let single = try top.mapping("machine") {
            machines.append(try parseMachine(single, defaultName: "main"))
        }
        if let list = try top.list("machines") {
            for (index, node) in list.enumerated() {
                let mapping = try YAMLMapping(file: file, path: "machines[\(index)]", node: node)
                machines.append(try parseMachine(mapping, defaultName: nil))
            }
        }
        guard !machines.isEmpty else { throw top.error("machine", "required key is missing (or give a list under machines)") }
        if top.has("machine") && top.has("machines") {
            throw top.error("machines", "give either machine or machines, not both")
        }
        var seenMachines = Set<String>()
        for machine in machines where !seenMachines.insert(machine.name).inserted {
            throw top.error("machines", "machine name '\(machine.name)' is used twice")
        }

        let backup = try top.mapping("backup").map(parseBackup) ?? .default

        let targetNames = try top.stringList("targets")
        guard !targetNames.isEmpty else { throw top.error("targets", "lists no target") }
        for (index, t) in targetNames.enumerated() where targets[t] == nil {
            throw ScenarioError(file: file, key: "targets[\(index)]",
                                reason: "unknown target '\(t)' (known: \(targets.keys.sorted().joined(separator: ", ")))")
        }
        if Set(targetNames).count != targetNames.count { throw top.error("targets", "lists a target twice") }

        var expectations: [String: Expectation] = [:]
        if let expect = try top.mapping("expect") {
            for key in expect.keys {
                guard targetNames.contains(key) else {
                    throw expect.error(key, "expectation for a target the scenario does not list")
                }
                expectations[key] = try parseExpectation(expect, key)
            }
            try expect.finish()
        }

        for machine in machines {
            let drivers = machine.storageDrivers ?? targetNames.compactMap { targets[$0]?.controller.driver }
            for driver in drivers where !targets.values.contains(where: { $0.controller.driver == driver }) {
                throw ScenarioError(file: file, key: "machine(\(machine.name)).storage_drivers",
                                    reason: "no target's controller uses driver '\(driver)' (known: \(Set(targets.values.map(\.controller.driver)).sorted().joined(separator: ", ")))")
            }
            if machine.sectorSize != 512 {
                // "Where the formats allow it" (docs/uefi.md): refused here, with the reason, rather
                // than a cell that cannot boot for a reason nobody stated.
                for (index, t) in targetNames.enumerated() {
                    guard let target = targets[t] else { continue }
                    if let why = Self.sectorSizeRefusal(machine: machine, target: target) {
                        throw ScenarioError(file: file, key: "targets[\(index)]", reason: "machine \(machine.name) has \(machine.sectorSize)-byte sectors; target \(t): \(why)")
                    }
                }
            }
            for t in targetNames {
                guard let target = targets[t], let needed = target.requiresKernel, needed != machine.kernel,
                      (expectations[t] ?? .boots) == .boots else { continue }
                throw ScenarioError(file: file, key: "expect.\(t)",
                                    reason: "target \(t) needs the \(needed.rawValue) kernel but machine \(machine.name) uses \(machine.kernel.rawValue): it cannot be expected to boot")
            }
        }

        var reconfigure = false
        if let value = top.raw("reconfigure") {
            guard let flag = value as? Bool else {
                throw top.error("reconfigure", "expected true or false, found \(YAMLMapping.describe(value))")
            }
            reconfigure = flag
        }
        var materialize: Bool?
        if let value = top.raw("materialize") {
            guard let flag = value as? Bool else {
                throw top.error("materialize", "expected true or false, found \(YAMLMapping.describe(value))")
            }
            materialize = flag ? true : nil
        }
        var scenario = Scenario(
            name: name, summary: try top.optionalString("description") ?? "", seed: UInt64(seedValue),
            machines: machines, backup: backup, targets: targetNames, expectations: expectations, file: file,
            reconfigure: reconfigure)
        scenario.materialize = materialize
        if let m = machines.first(where: { $0.sectorSize != 512 }) {
            // What the 4Kn cell checks (docs/uefi.md, "4 KiB sectors"); the lab's checks of these
            // other paths (reconfigured ranges, incremental edits, the materialized file's boot)
            // count 512-byte sectors, so they are refused rather than half-checked.
            let why = "is not wired for \(m.sectorSize)-byte sectors (machine \(m.name)): the lab's checks for it count 512-byte sectors"
            if reconfigure { throw top.error("reconfigure", why) }
            if materialize == true { throw top.error("materialize", why) }
            if !backup.incrementals.isEmpty { throw top.error("backup.incrementals", why) }
        }
        let tier: Scenario.Tier = try top.choice("tier", default: .default)
        if tier != .default { scenario.tier = tier }
        try top.finish()
        return scenario
    }

    /// Why a machine with non-512-byte sectors cannot be a cell on `target`, or nil: its format
    /// must hold them (`LabDiskFormat.sectorSizeRefusal`), its firmware boot a 4Kn disk (OVMF;
    /// SeaBIOS boots MBRs of 512-byte sectors), and its controller present them (virtio-blk,
    /// SCSI disks: `BootRunner.blockSizeArguments`).
    public static func sectorSizeRefusal(machine: SourceMachine, target: Target) -> String? {
        guard machine.sectorSize != 512 else { return nil }
        if let why = LabDiskFormat.sectorSizeRefusal(format: target.nativeFormat, sectorSize: machine.sectorSize) {
            return "native format \(target.nativeFormat): \(why)"
        }
        if target.firmware != "ovmf" { return "firmware \(target.firmware) boots 512-byte-sector MBR disks; a 4Kn disk needs UEFI (ovmf)" }
        if BootRunner.blockSizeDevice(controller: target.controller.kind) == nil {
            return "QEMU's \(target.controller.kind) disk has 512-byte logical sectors only (4096 needs virtio-blk or a SCSI disk)"
        }
        if target.bootRunner != nil { return "a custom boot runner is not told the sector size" }
        return nil
    }

    static func parseMachine(_ m: YAMLMapping, defaultName: String?) throws -> SourceMachine {
        let name = try m.optionalString("name") ?? defaultName ?? { throw m.error("name", "required key is missing") }()
        let os: MachineOS = try m.choice("os", default: .tiny)
        let filesystem: FileSystemKind = try m.choice("filesystem")
        let bootloader: BootLoaderKind = try m.choice("bootloader", default: os == .debianGrub ? .grub : os == .debianUEFI ? .grubEFI
                                                          : (filesystem == .ext4 ? .extlinux : .syslinux))
        if os == .debianUEFI {
            // The fixture script decides these; the scenario states them so readers see them.
            guard filesystem == .ext4 else { throw m.error("filesystem", "os debian-uefi is an ext4 volume") }
            guard bootloader == .grubEFI else { throw m.error("bootloader", "os debian-uefi boots with grub-efi") }
            guard try m.size("volume_size") == DiskGenerator.debianVolumeSize else { throw m.error("volume_size", "os debian-uefi is a 512M volume") }
            guard try m.string("kernel") == KernelFlavour.cloud.rawValue else { throw m.error("kernel", "os debian-uefi runs the cloud kernel") }
            guard try m.string("marker") == "debian-uefi" else {
                throw m.error("marker", "os debian-uefi prints `BOOTLAB-MARKER debian-uefi booted`: the marker is debian-uefi")
            }
            guard !m.has("storage_drivers") else { throw m.error("storage_drivers", "os debian-uefi's initramfs is initramfs-tools' (MODULES=most)") }
        } else if os == .debianGrub {
            // The fixture script decides these; the scenario states them so readers see them.
            guard filesystem == .ext4 else { throw m.error("filesystem", "os debian-grub is an ext4 volume") }
            guard bootloader == .grub else { throw m.error("bootloader", "os debian-grub boots with grub") }
            guard try m.size("volume_size") == DiskGenerator.debianVolumeSize else { throw m.error("volume_size", "os debian-grub is a 512M volume") }
            guard try m.string("kernel") == KernelFlavour.cloud.rawValue else { throw m.error("kernel", "os debian-grub runs the cloud kernel") }
            guard try m.string("marker") == "debian-grub" else {
                throw m.error("marker", "os debian-grub prints `BOOTLAB-MARKER debian-grub booted`: the marker is debian-grub")
            }
            guard !m.has("storage_drivers") else { throw m.error("storage_drivers", "os debian-grub's initramfs is initramfs-tools' (MODULES=most)") }
        } else if os == .windowsHives {
            guard filesystem == .ntfs else { throw m.error("filesystem", "os windows-hives is an ntfs volume") }
            guard !m.has("bootloader") else { throw m.error("bootloader", "os windows-hives has no boot loader we could run (no Windows)") }
            guard !m.has("storage_drivers") else { throw m.error("storage_drivers", "os windows-hives has no initramfs") }
        } else if filesystem == .ntfs {
            throw m.error("filesystem", "ntfs needs os: windows-hives")
        } else if bootloader == .grubEFI {
            guard filesystem == .ext4 else { throw m.error("bootloader", "grub-efi cannot boot from \(filesystem.rawValue) (grub-efi: ext4)") }
        } else if bootloader == .grub {
            throw m.error("bootloader", "grub needs os: debian-grub (the tiny Linux boots with extlinux or syslinux)")
        } else if (filesystem == .ext4) != (bootloader == .extlinux) {
            throw m.error("bootloader", "\(bootloader.rawValue) cannot boot from \(filesystem.rawValue) (extlinux: ext4, syslinux: fat32, grub-efi: ext4)")
        }
        let volumeSize = try m.size("volume_size")
        guard volumeSize % 4096 == 0 else { throw m.error("volume_size", "must be a multiple of 4 KiB") }
        let minimum: UInt64 = filesystem == .fat32 ? 40 << 20 : 16 << 20
        guard volumeSize >= minimum, volumeSize <= 4 << 30 else {
            throw m.error("volume_size", "must be between \(minimum >> 20) MiB and 4 GiB for \(filesystem.rawValue)")
        }
        // A 4Kn disk (docs/uefi.md, "4 KiB sectors"): GPT + UEFI only — BIOS boot code and the
        // MBR tools count 512-byte sectors.
        var shape = SourceMachine(name: name, kernel: .cloud, filesystem: filesystem, bootloader: bootloader, volumeSize: volumeSize,
                                  partitionStart: 0, diskSize: 0, storageDrivers: nil, marker: "")
        if let lss = try m.optionalInteger("logical_sector_size") {
            guard lss == 512 || lss == 4096 else { throw m.error("logical_sector_size", "must be 512 or 4096, not \(lss)") }
            guard lss == 512 || (bootloader == .grubEFI && os == .tiny) else {
                throw m.error("logical_sector_size", "4096-byte sectors need a GPT disk booted by UEFI (bootloader: grub-efi): BIOS boot code and MBRs count 512-byte sectors")
            }
            if lss == 4096 { shape.logicalSectorSize = lss }
        }
        let ss = UInt64(shape.sectorSize)
        let startValue = try m.optionalInteger("partition_start") ?? Int((1 << 20) / ss)
        guard startValue >= 1, startValue < 1 << 31 else { throw m.error("partition_start", "must be an LBA between 1 and 2^31") }
        let start = UInt64(startValue)
        if bootloader == .grubEFI, start < shape.espStart + shape.espSectorCount {
            throw m.error("partition_start", "a grub-efi machine keeps its ESP at LBA \(shape.espStart)–\(shape.espStart + shape.espSectorCount - 1): the root must start at \(shape.espStart + shape.espSectorCount) or later")
        }
        guard volumeSize % ss == 0 else { throw m.error("volume_size", "must be a multiple of the \(ss)-byte sector") }
        // A GPT disk also keeps its backup header and entry array in the last 33 sectors (5 of 4096 bytes).
        let end = start * ss + volumeSize + (bootloader == .grubEFI ? shape.gptTailBytes : 0)
        let defaultDisk = (end + (1 << 20) - 1) / (1 << 20) * (1 << 20)
        let diskSize = try m.optionalSize("disk_size") ?? defaultDisk
        guard diskSize >= end, diskSize % ss == 0 else {
            throw m.error("disk_size", "must hold the partition (\(end) bytes) and be a multiple of \(ss)")
        }
        let marker = try m.string("marker")
        guard !marker.isEmpty, marker.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
            throw m.error("marker", "must be non-empty ASCII letters, digits, '-', '_' or '.'")
        }
        let machine = SourceMachine(
            name: name, kernel: try m.choice("kernel"), filesystem: filesystem, bootloader: bootloader,
            volumeSize: volumeSize, partitionStart: start, diskSize: diskSize,
            storageDrivers: try m.optionalStringList("storage_drivers"), marker: marker)
        var result = machine
        if os != .tiny { result.os = os }
        result.logicalSectorSize = shape.logicalSectorSize
        try m.finish()
        return result
    }

    static func parseBackup(_ b: YAMLMapping) throws -> BackupSpec {
        var spec = BackupSpec.default
        spec.kind = try b.choice("kind", default: spec.kind)
        spec.blockSize = try b.optionalSize("block_size") ?? spec.blockSize
        guard spec.blockSize >= 64 << 10, spec.blockSize <= 4 << 20, spec.blockSize & (spec.blockSize - 1) == 0 else {
            throw b.error("block_size", "must be a power of two between 64K and 4M")
        }
        spec.compression = try b.choice("compression", default: spec.compression)
        spec.encryption = try b.choice("encryption", default: spec.encryption)
        spec.vault = try b.optionalString("vault")
        spec.frontend = try b.choice("frontend", default: spec.frontend)
        if b.has("esp") {
            let mode: BackupSpec.ESPMode = try b.choice("esp")
            guard spec.kind == .volumeOnly else { throw b.error("esp", "applies to volume-only backups") }
            spec.esp = mode
        }
        if let start = try b.optionalString("expose_partition_start") {
            guard let lba = UInt64(start), lba >= 1, lba <= UInt64(UInt32.max) else {
                throw b.error("expose_partition_start", "must be an LBA between 1 and 2^32-1")
            }
            guard spec.kind == .volumeOnly else { throw b.error("expose_partition_start", "applies to volume-only backups") }
            spec.exposePartitionStart = lba
        }
        spec.command = try b.optionalStringList("command")
        spec.source = try b.optionalStringList("source")
        spec.sourceFiles = try b.optionalStringList("source_files") ?? []
        for f in spec.sourceFiles where f.hasPrefix("/") || f.contains("{") {
            throw b.error("source_files", "'\(f)' must be a path relative to the scenario's directory")
        }
        guard (spec.command == nil) == (spec.source == nil) else {
            throw b.error(spec.command == nil ? "source" : "command", "a user's backup tool needs both `command` and `source`")
        }
        if let command = spec.command {
            guard !command.isEmpty, !(spec.source ?? []).isEmpty else { throw b.error("command", "must not be empty") }
            guard spec.compression == .none, spec.encryption == .none, spec.vault == nil, b.raw("incrementals") == nil else {
                throw b.error("command", "a user's backup tool cannot be combined with compression, encryption, vault or incrementals (those are the .bli writer's)")
            }
        }
        if let list = try b.list("incrementals") {
            spec.incrementals = try list.enumerated().map { index, node in
                let c = try YAMLMapping(file: b.file, path: b.keyPath("incrementals[\(index)]"), node: node)
                var writes: [ChangeSet.FileWrite] = []
                for (wi, wnode) in (try c.list("write") ?? []).enumerated() {
                    let w = try YAMLMapping(file: b.file, path: c.keyPath("write[\(wi)]"), node: wnode)
                    let path = try w.string("path")
                    guard path.hasPrefix("/") else { throw w.error("path", "must be absolute") }
                    writes.append(.init(path: path, size: try w.size("size")))
                    try w.finish()
                }
                let deletes = try c.optionalStringList("delete") ?? []
                guard !writes.isEmpty || !deletes.isEmpty else { throw c.error("write", "change set changes nothing") }
                try c.finish()
                return ChangeSet(writes: writes, deletes: deletes)
            }
        }
        if spec.kind == .volumeSet {
            guard spec.incrementals.isEmpty, spec.command == nil, spec.vault == nil else {
                throw b.error("kind", "a volume set cannot be combined with incrementals, a vault or a user's backup tool (not implemented)")
            }
        }
        try b.finish()
        return spec
    }

    static func parseExpectation(_ expect: YAMLMapping, _ key: String) throws -> Expectation {
        let node = expect.raw(key)
        if let s = node as? String {
            guard s == "boots" else { throw expect.error(key, "'\(s)' is not boots (or a mapping must_not_boot: REASON or not_booted: REASON)") }
            return .boots
        }
        let m = try YAMLMapping(file: expect.file, path: expect.keyPath(key), node: node)
        if m.has("not_booted") {
            let reason = try m.string("not_booted")
            guard !reason.isEmpty else { throw m.error("not_booted", "must say why the cell is not booted") }
            try m.finish()
            return .notBooted(reason: reason)
        }
        let reason = try m.string("must_not_boot")
        do { _ = try NSRegularExpression(pattern: reason, options: [.caseInsensitive]) } catch {
            throw m.error("must_not_boot", "not a valid regular expression")
        }
        try m.finish()
        return .mustNotBoot(reason: reason)
    }

    static func loadYAML(_ text: String, file: String) throws -> Any? {
        do { return try Yams.load(yaml: text) } catch {
            throw ScenarioError(file: file, key: "", reason: "not valid YAML: \(error)")
        }
    }

    static func checkName(_ name: String, file: String, top: YAMLMapping) throws {
        guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }) else {
            throw top.error("name", "must be lowercase letters, digits and '-'")
        }
        let stem = URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
        guard stem == name else { throw top.error("name", "'\(name)' does not match the file name '\(stem)'") }
    }
}
