import BackupImage
import BlockCore
import Exposure
import Foundation
import Reconfigure

/// Exposes every machine's backup as a plugin file in the target's native format
/// (`<machine>.vhdx`, `.vmdk`, `.qcow2`, `.vhd`, `.vdi` in the cell's plugin directory). `MountStep` then serves them; a reconfiguration step may run in between.
public struct ExposeStep: LabStep {
    public let name = "expose"
    public init() {}

    public static func pluginDirectory(_ context: CellContext) -> URL { context.directory.appendingPathComponent("plug") }

    public func run(in context: CellContext) throws -> StepOutcome {
        let plug = Self.pluginDirectory(context)
        let format = try LabDiskFormat.of(context.target)
        var opts = PluginFile.ExposeOptions()
        opts.format = format.name
        opts.formatKeys = context.target.formatOptions
        opts.composer.partitionStartLBA = context.scenario.backup.exposePartitionStart
        opts.composer.faults = try context.options.faults.map { try FaultPlan(parsing: $0) } ?? .none
        if context.scenario.backup.encryption != .none { opts.passphrase = .file(try BackupStep.passphraseFile(in: context)) }
        if let vault = context.scenario.backup.vault { opts.vault = plug.appendingPathComponent("vault-\(vault)").path }
        var notes: [String] = []
        for machine in context.scenario.machines {
            guard let backup = context.backups[machine.name] else { return .fail("\(machine.name): no backup") }
            let plugin = plug.appendingPathComponent(format.fileName(machine: machine.name)).path
            let r: PluginFile.ExposeReport
            if let source = context.sources[machine.name] {
                // A user's format: exposed through its source, with what the lab knows of the
                // original disk (as a .bli header would record it), so the composed disk equals it.
                var o = opts
                o.source.kind = context.scenario.backup.kind == .disk ? .disk : .volume
                if context.scenario.backup.kind == .volumeOnly, let g = context.generated[machine.name] {
                    let mbr = try RawFile(path: g.diskPath).read(at: 0, count: 512)
                    o.source.original = .init(partitionStartLBA: machine.partitionStart, diskSize: machine.diskSize,
                                              diskSignature: mbr.le32(440), partitionType: mbr[446 + 4], bootable: mbr[446] == 0x80)
                }
                r = try PluginFile.exposeSource(source, pluginPath: plugin, options: o)
            } else {
                var mopts = opts
                if context.scenario.backup.esp == .synthesize {
                    // What `bootlab expose --esp` does: a GRUB EFI loader from the volume's own modules.
                    let reader = try BackupImageReader.open(path: backup, passphrase: opts.passphrase, vault: opts.vault)
                    let loader = try GrubEFILoader.build(volume: reader, workDirectory: context.directory)
                    mopts.composer.esp = .init(files: loader.espFiles)
                }
                r = context.scenario.backup.kind == .volumeSet
                    ? try PluginFile.exposeSet(manifestPath: backup, pluginPath: plugin, options: mopts)
                    : try PluginFile.expose(backupPath: backup, pluginPath: plugin, options: mopts)
            }
            context.plugins[machine.name] = plugin
            context.put(Artefact(role: ArtefactRole.plugin, machine: machine.name, disk: .file(path: plugin, format: format.qemuDriver), files: [plugin]))
            notes.append("\(machine.name): \(r.format) \(r.composition)" + (r.partitionStartLBA.map { " at LBA \($0)" } ?? "") + (context.scenario.backup.esp == .synthesize && context.sources[machine.name] == nil ? ", synthesized ESP" : "") + (r.patchedBytes > 0 ? ", BPB patched" : ""))
        }
        return .pass(notes.joined(separator: "; "))
    }

    /// `--passphrase-file` and `--vault` for child `bootlab` commands that open the plugins.
    public static func accessArguments(_ context: CellContext) throws -> [String] {
        var args: [String] = []
        if context.scenario.backup.encryption != .none { args += ["--passphrase-file", try BackupStep.passphraseFile(in: context)] }
        if let vault = context.scenario.backup.vault {
            args += ["--vault", pluginDirectory(context).appendingPathComponent("vault-\(vault)").path]
        }
        // A user's source plugin, named by the scenario: the lab trusts what its scenario runs.
        for spec in Set(context.sources.values.compactMap { $0.kind == .nbdkit ? $0.argv.first : nil }).sorted() {
            args += ["--allow-source-plugin", spec]
        }
        return args
    }

    /// `--inject-fault SPEC` for child `bootlab mount`/`serve` when the run injects faults
    /// (fault tests only): passed on their command line, never through the environment.
    public static func faultArguments(_ context: CellContext) -> [String] {
        context.options.faults.map { ["--\(FaultPlan.optionName)", $0] } ?? []
    }
}
