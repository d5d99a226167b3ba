import BackupImage
import BlockCore
import Exposure
import Foundation

/// Exposes every machine's backup as a plugin file (`<machine>.vhdx` in the cell's plugin
/// directory). `MountStep` then serves them; a reconfiguration step may run in between.
public struct ExposeStep: LabStep {
    public let name = "expose"
    public init() {}

    public static func mountpoint(_ context: CellContext) -> URL { context.directory.appendingPathComponent("mnt") }
    public static func pluginDirectory(_ context: CellContext) -> URL { context.directory.appendingPathComponent("plug") }

    public func run(in context: CellContext) throws -> StepOutcome {
        let plug = Self.pluginDirectory(context)
        var opts = PluginFile.ExposeOptions()
        opts.composer.partitionStartLBA = context.scenario.backup.exposePartitionStart
        if context.scenario.backup.encryption != .none { opts.passphrase = .file(try BackupStep.passphraseFile(in: context)) }
        if let vault = context.scenario.backup.vault { opts.vault = plug.appendingPathComponent("vault-\(vault)").path }
        var notes: [String] = []
        for machine in context.scenario.machines {
            guard let backup = context.backups[machine.name] else { return .fail("\(machine.name): no backup") }
            let plugin = plug.appendingPathComponent("\(machine.name).vhdx").path
            let r = try PluginFile.expose(backupPath: backup, pluginPath: plugin, options: opts)
            context.plugins[machine.name] = plugin
            context.put(Artefact(role: ArtefactRole.plugin, machine: machine.name, disk: .file(path: plugin, format: "vhdx"), files: [plugin]))
            notes.append("\(machine.name): \(r.composition)" + (r.partitionStartLBA.map { " at LBA \($0)" } ?? "") + (r.patchedBytes > 0 ? ", BPB patched" : ""))
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
        return args
    }

    static func isMounted(_ path: String) -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
        return text.split(separator: "\n").contains { line in
            let f = line.split(separator: " ")
            return f.count > 4 && f[4] == path
        }
    }
}
