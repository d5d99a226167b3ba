import BackupImage
import BlockCore
import Exposure
import Foundation

/// Exposes every machine's backup as a plugin file and starts the scenario's front-end over the
/// plugin directory: `bootlab mount` (FUSE; the mounted `<machine>.vhdx` is the boot disk) or
/// `bootlab serve` (NBD; QEMU's vhdx driver reads the export). Child processes either way; the
/// disks are synthesized on the fly from the backup, never restored.
public struct ExposeStep: LabStep {
    public let name = "expose"
    public init() {}

    public static func pluginDirectory(_ context: CellContext) -> URL { context.directory.appendingPathComponent("plug") }

    /// `bootlab mount`/`serve` options for the scenario's backups (passphrase file, vault).
    public static func accessArguments(_ context: CellContext) throws -> [String] {
        var args: [String] = []
        if context.scenario.backup.encryption != .none { args += ["--passphrase-file", try BackupStep.passphraseFile(in: context)] }
        if let vault = context.scenario.backup.vault {
            args += ["--vault", pluginDirectory(context).appendingPathComponent("vault-\(vault)").path]
        }
        return args
    }

    public static func faultEnvironment(_ context: CellContext) -> [String: String] {
        context.options.faults.map { [FaultPlan.environmentVariable: $0] } ?? [:]
    }

    public func run(in context: CellContext) throws -> StepOutcome {
        let plug = Self.pluginDirectory(context)
        let faults = try context.options.faults.map { try FaultPlan(parsing: $0) } ?? .none
        var opts = PluginFile.ExposeOptions()
        opts.composer.partitionStartLBA = context.scenario.backup.exposePartitionStart
        opts.composer.faults = faults
        if context.scenario.backup.encryption != .none { opts.passphrase = .file(try BackupStep.passphraseFile(in: context)) }
        if let vault = context.scenario.backup.vault { opts.vault = plug.appendingPathComponent("vault-\(vault)").path }
        var notes: [String] = []
        var plugins: [String: String] = [:]
        for machine in context.scenario.machines {
            guard let backup = context.backups[machine.name] else { return .fail("\(machine.name): no backup") }
            let plugin = plug.appendingPathComponent("\(machine.name).vhdx").path
            let r = try PluginFile.expose(backupPath: backup, pluginPath: plugin, options: opts)
            plugins[machine.name] = plugin
            context.plugins[machine.name] = plugin
            context.put(Artefact(role: ArtefactRole.plugin, machine: machine.name, disk: .file(path: plugin, format: "vhdx"), files: [plugin]))
            notes.append("\(machine.name): \(r.composition)" + (r.partitionStartLBA.map { " at LBA \($0)" } ?? "") + (r.patchedBytes > 0 ? ", BPB patched" : ""))
        }
        let kind = context.scenario.backup.frontend
        let fe = try FrontEndProcess.start(kind, plugins: plugins, pluginDirectory: plug,
                                           extraArguments: try Self.accessArguments(context),
                                           environment: Self.faultEnvironment(context), label: "mnt", in: context)
        context.frontEnd = fe
        for machine in context.scenario.machines {
            let ref = fe.diskReference(machine: machine.name)
            // Through FUSE the exposed file is a file: its digest is golden. Over NBD there is no
            // file; the plugin's digest and the compare validator cover it.
            let files = kind == .fuse ? [fe.exposedPath(machine: machine.name)] : []
            context.put(Artefact(role: ArtefactRole.bootDisk, machine: machine.name, disk: ref, files: files))
        }
        return .pass(notes.joined(separator: "; ") + (kind == .fuse ? "; mounted through FUSE" : "; served over NBD"))
    }
}
