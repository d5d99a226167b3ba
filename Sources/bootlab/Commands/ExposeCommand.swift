import ArgumentParser
import BackupImage
import BlockCore
import DiskFormats
import Exposure
import Foundation
import PluginReconfigure
import Reconfigure

/// `bootlab expose BACKUP --out vm.vhdx`: write the plugin file for a backup.
struct ExposeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "expose",
        abstract: "Write a plugin file (a VHDX skeleton pointing at the backup) that the filters serve as a full native disk.",
        discussion: """
        The plugin is a valid VHDX whose payload is a hole: `bootlab mount` or `bootlab serve` turn it \
        into the full disk, reading the backup on demand. Volume-only backups get a synthesized MBR \
        (syslinux's mbr.bin by default), or a GPT when the volume came from a GPT disk or has 4096-byte \
        sectors (--partition-table), with the volume at its original start, or at --partition-start.
        """)

    @Argument(help: "The backup image (.bli); omit it with --source.") var backup: String?
    @Option(name: .long, help: ArgumentHelp("Expose another source instead of a .bli backup: nbdkit:PLUGIN[:ARG…], an NBD URI (nbd+unix:///EXPORT?socket=S, nbd://HOST:PORT/EXPORT), qemu-nbd:PATH[:FORMAT], or an image path (qcow2, VMDK, VHD, VHDX, VDI through our readers; raw otherwise).", valueName: "spec")) var source: String?
    @Option(name: .long, help: "What the --source holds: disk or volume (default: a partition table in sector 0 means disk).") var sourceKind: String?
    @Flag(name: .long, help: "Record the SHA-256 of the whole --source (read now, and again at every open); default: size + sampled ranges.") var verifySource = false
    @Option(name: .long, help: "An identifier of the --source to record (e.g. your backup product's backup ID).") var sourceId: String?
    @Option(name: .long, help: "Seconds allowed for the --source to start, connect and answer each read (default 60).") var sourceTimeout: Double?
    @Option(name: .long, help: "The plugin file to write (e.g. vm.vhdx).") var out: String
    @Option(name: .long, help: "Place the volume at this LBA instead of its original start.") var partitionStart: UInt64?
    @Option(name: .long, help: "Partition table for a volume backup: auto (GPT for a volume from a GPT disk or with 4096-byte sectors, else MBR), mbr, gpt.") var partitionTable: String = "auto"
    @Flag(name: .long, help: "Add a synthesized EFI System Partition (FAT32, GPT) holding a GRUB EFI loader at \\EFI\\BOOT\\BOOTX64.EFI, built from the volume's own x86_64-efi modules (docs/uefi.md).") var esp = false
    @Option(name: .long, help: "With --esp: where the loader's GRUB modules come from: volume (default; refuse a volume without them) or host (this machine's grub-efi-amd64-bin).") var espLoaderModules: String = "volume"
    @Option(name: .long, help: "MBR boot code: a 440-byte file or a 512-byte MBR (default: syslinux's mbr.bin).") var bootCode: String?
    @Option(name: .long, help: "The plugin's native format: \(DiskFormatRegistry.names.joined(separator: ", ")) (default: the --target's native format, else vhdx).") var format: String?
    @Option(name: .customShort("o"), help: "Format options key=value[,…] (e.g. subformat=fixed for vhd, adapter_type=lsilogic for vmdk).") var formatOptions: [String] = []
    @Option(name: .long, help: "Payload unit: VHDX block size (1M–256M), VMDK grain, qcow2 cluster, VHD/VDI block (default: the format's, by size).") var blockSize: String?
    @Option(name: .long, help: "The dedup vault directory, if the backup uses one.") var vault: String?
    @Flag(name: .long, help: "Allow a backup outside the plugin's directory tree.") var allowOutside = false
    @OptionGroup var passphrase: BackupCommand.PassphraseOptions
    @OptionGroup var faults: FaultInjectionOptions
    @Option(name: .long, help: "Also reconfigure the OS for this target (as `bootlab reconfigure PLUGIN --target T`).") var target: String?
    @Option(name: .long, help: "Driver data for --target (default: $BOOTLAB_DRIVERS, else drivers.json of the installed or built-in data; docs/installing.md).") var drivers: String?
    @Flag(help: "Print JSON.") var json = false

    /// `--json` with `--target`: both reports.
    struct Combined: Encodable {
        var expose: PluginFile.ExposeReport
        var reconfigure: PluginReconfiguration.Result
    }

    /// `--format`, else the target's native format (drivers.json), else VHDX.
    private func pluginFormat() throws -> String {
        if let format {
            guard DiskFormatRegistry.driver(named: format) != nil else {
                throw ValidationError("--format \(format): not a native format (\(DiskFormatRegistry.names.joined(separator: ", ")))")
            }
            return format.lowercased()
        }
        guard let target else { return VHDXView.formatName }
        // A target needs the driver data: not finding it is an error naming where it looked.
        guard let native = try DriverDatabase.load(path: try DriverDatabase.defaultPath(explicit: drivers)).targets[target]?.nativeFormat else {
            return VHDXView.formatName
        }
        guard DiskFormatRegistry.driver(named: native) != nil else {
            throw ValidationError("target \(target)'s native format \(native) is not one this bootlab writes yet; pass --format")
        }
        return native
    }

    func run() throws {
        do {
            var o = PluginFile.ExposeOptions()
            o.composer.partitionStartLBA = partitionStart
            guard let table = DiskComposer.PartitionTableChoice(rawValue: partitionTable.lowercased()) else {
                throw ValidationError("--partition-table \(partitionTable): expected auto, mbr or gpt")
            }
            o.composer.partitionTable = table
            o.composer.faults = try faults.plan()
            if let bootCode { o.composer.bootCode = try DiskComposer.loadBootCode(path: bootCode) }
            if let blockSize { o.blockSize = UInt32(try ByteSize.parse(blockSize)) }
            o.format = try pluginFormat()
            for kv in formatOptions.flatMap({ $0.split(separator: ",") }) {
                let parts = kv.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { throw ValidationError("option '\(kv)' is not key=value") }
                o.formatKeys[parts[0]] = parts[1]
            }
            o.allowOutside = allowOutside
            o.vault = vault
            let r: PluginFile.ExposeReport
            if let source {
                guard backup == nil else { throw ValidationError("give either BACKUP or --source, not both") }
                guard !esp else { throw ValidationError("--esp applies to a .bli backup, not to --source (not implemented)") }
                switch sourceKind {
                case nil: break
                case "disk": o.source.kind = .disk
                case "volume": o.source.kind = .volume
                case let k?: throw ValidationError("--source-kind \(k): expected disk or volume")
                }
                o.source.verify = verifySource
                o.source.id = sourceId
                if let sourceTimeout { o.source.timeout = sourceTimeout }
                r = try PluginFile.exposeSource(try BackupSourceSpec(parsing: source), pluginPath: out, options: o)
            } else {
                guard let backup else { throw ValidationError("give a BACKUP (.bli) or --source SPEC") }
                guard sourceKind == nil, !verifySource, sourceId == nil, sourceTimeout == nil else {
                    throw ValidationError("--source-kind, --verify-source, --source-id and --source-timeout apply to --source")
                }
                if BackupSetManifest.looksLikeManifest(path: backup) {
                    // A volume set: one GPT disk composed from every member (docs/formats/gpt.md).
                    guard !esp else { throw ValidationError("--esp with a volume set is not implemented (a set that holds its ESP needs none)") }
                    if try Self.setHasEncryptedMember(backup) { o.passphrase = passphrase.source }
                    r = try PluginFile.exposeSet(manifestPath: backup, pluginPath: out, options: o)
                } else {
                    r = try exposeBackup(backup, options: &o)
                }
            }
            if let target {
                let driversPath = try DriverDatabase.defaultPath(explicit: drivers)
                var access = PluginFile.OpenOptions()
                access.vault = vault
                access.allowOutside = allowOutside
                if let sourceTimeout { access.sourceTimeout = sourceTimeout }
                // The source exposed here is the one the user just named: allow its plugin.
                if let source, let spec = try? BackupSourceSpec(parsing: source), spec.kind == .nbdkit, let name = spec.argv.first {
                    access.allowedSourcePlugins.insert(name)
                }
                if let p = o.passphrase { access.passphrase = .bytes(try p.resolve()) }
                let rc = try ReconfigureCommand.reconfigurePlugin(out, target: target, drivers: try DriverDatabase.load(path: driversPath),
                                                                 access: access, dryRun: false)
                if json { try BackupCommand.printJSON(Combined(expose: r, reconfigure: rc)); return }
                print("exposed \(r.backup) as \(r.plugin): \(r.composition) composition, virtual size \(ByteSize.format(r.virtualSize))")
                ReconfigureCommand.printReport(rc.report, dryRun: false, layer: rc.layer)
                return
            }
            if json {
                try BackupCommand.printJSON(r)
            } else {
                print("exposed \(r.backup) as \(r.plugin): \(r.composition) composition, virtual size \(ByteSize.format(r.virtualSize))"
                      + (r.partitionStartLBA.map { ", partition at LBA \($0)" } ?? "")
                      + (r.patchedBytes > 0 ? ", \(r.patchedBytes) boot-sector bytes patched" : ""))
                print("\(r.format.uppercased()) file size \(ByteSize.format(r.fileSize)), \(r.allocatedBlocks) blocks of \(ByteSize.format(UInt64(r.blockSize))); plugin holds \(ByteSize.format(r.payloadStart)) of metadata")
            }
        } catch {
            throw BackupCommand.fail(error)
        }
    }

    /// One `.bli` backup (optionally with a synthesized ESP).
    private func exposeBackup(_ backup: String, options o: inout PluginFile.ExposeOptions) throws -> PluginFile.ExposeReport {
        let header = try BackupImageReader.readHeader(path: backup).header
        if header.isEncrypted { o.passphrase = passphrase.source }
        if esp {
            guard ["volume", "host"].contains(espLoaderModules) else {
                throw ValidationError("--esp-loader-modules \(espLoaderModules): expected volume or host")
            }
            // Resolved once: the loader build and the expose both open the backup.
            if let p = o.passphrase { o.passphrase = .bytes(try p.resolve()) }
            let reader = try BackupImageReader.open(path: backup, passphrase: o.passphrase, vault: vault)
            let loader = try GrubEFILoader.build(volume: reader, allowHostModules: espLoaderModules == "host")
            o.composer.esp = .init(files: loader.espFiles)
        } else if espLoaderModules != "volume" {
            throw ValidationError("--esp-loader-modules applies with --esp")
        }
        return try PluginFile.expose(backupPath: backup, pluginPath: out, options: o)
    }

    /// Whether any image a volume set's manifest names is encrypted (the passphrase is then
    /// needed; an unreadable member is refused by the expose itself, naming it).
    static func setHasEncryptedMember(_ manifestPath: String) throws -> Bool {
        let manifest = try BackupSetManifest.read(path: manifestPath)
        let directory = (manifestPath as NSString).deletingLastPathComponent
        return manifest.volumes.contains { v in
            (try? BackupImageReader.readHeader(path: directory.isEmpty ? v.file : directory + "/" + v.file))?.header.isEncrypted == true
        }
    }
}
