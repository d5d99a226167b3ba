import ArgumentParser
import BackupImage
import Exposure
import Foundation
import Frontends

/// How `mount`, `serve`, `convert` and `reconfigure` open plugin files: the same passphrase
/// options as `expose` (file, environment, prompt — never argv), the vault, and the
/// directory-tree rule. The command passes the result to whatever opens plugins; nothing global.
struct PluginAccessOptions: ParsableArguments {
    @OptionGroup var passphrase: BackupCommand.PassphraseOptions
    @Option(name: .long, help: "The dedup vault directory of the exposed backups, if any.") var vault: String?
    @Flag(name: .long, help: "Allow plugin pointers that lead outside the plugin's directory tree.") var allowOutside = false
    @Option(name: .long, help: ArgumentHelp("Allow plugin files whose external source runs this nbdkit plugin by name (e.g. python, file); repeatable. A plugin program inside the plugin's directory tree needs no allowance.", valueName: "name"))
    var allowSourcePlugin: [String] = []
    @Option(name: .long, help: "Seconds allowed for an external source to start, connect and answer each read (default 60).") var sourceTimeout: Double?
    @Option(name: .long, help: "Refuse an external source unless its plugin records this --source-id.") var sourceId: String?

    /// The open options for `plugins`. A terminal prompt happens here, once, and only if one of
    /// `plugins` points at an encrypted backup — never later from a serving thread.
    func openOptions(plugins: [String]) throws -> PluginFile.OpenOptions {
        var o = PluginFile.OpenOptions()
        o.vault = vault
        o.allowOutside = allowOutside
        o.allowedSourcePlugins = Set(allowSourcePlugin)
        if let sourceTimeout { o.sourceTimeout = sourceTimeout }
        o.sourceID = sourceId
        if passphrase.passphraseFile != nil {
            // Read now: a mount may change its working directory, and a file may go away.
            o.passphrase = .bytes(try passphrase.source.resolve())
        } else if try plugins.contains(where: { try Self.needsPassphrase(plugin: $0, allowOutside: allowOutside) }) {
            o.passphrase = .bytes(try passphrase.source.resolve())
        }
        return o
    }

    /// The same access as nbdkit parameters of BootLab's plugin (`bootlab serve`).
    var sourcePluginParameters: [String] {
        allowSourcePlugin.map { "allow-source-plugin=" + $0 } + (sourceTimeout.map { ["source-timeout=\($0)"] } ?? [])
            + (sourceId.map { ["source-id=" + $0] } ?? [])
    }

    /// The same access as `bootlab` arguments (a `serve --raw` child, a front-end the lab starts).
    var sourceArguments: [String] {
        allowSourcePlugin.flatMap { ["--allow-source-plugin", $0] } + (sourceTimeout.map { ["--source-timeout", "\($0)"] } ?? [])
            + (sourceId.map { ["--source-id", $0] } ?? [])
    }

    static func needsPassphrase(plugin: String, allowOutside: Bool) throws -> Bool {
        guard PluginFile.isPlugin(path: plugin) else { return false }
        var o = PluginFile.OpenOptions()
        o.allowOutside = allowOutside
        o.allowedSourcePlugins = []
        let (pointer, _) = try PluginPointer.read(pluginPath: plugin)
        guard pointer.source == nil else { return false }  // an external source takes no passphrase
        let disk = try PluginFile.open(pluginPath: plugin, options: o)
        guard pointer.backupSet != nil else { return try BackupImageReader.readHeader(path: try disk.backupPath()).header.isEncrypted }
        // A volume set: a member that cannot be read here is refused by the open, naming it.
        return try disk.memberBackupPaths().contains { (try? BackupImageReader.readHeader(path: $0))?.header.isEncrypted == true }
    }
}

/// `--inject-fault SPEC` (hidden): deliberate corruption for the lab's fault tests, passed
/// explicitly by the lab to `mount`, `serve` and `expose` (see `FaultPlan` and docs/scenarios.md).
struct FaultInjectionOptions: ParsableArguments {
    @Option(name: .customLong(FaultPlan.optionName),
            help: ArgumentHelp("Inject a deliberate fault (lab fault tests): see FaultPlan (file-byte, structure-byte, mbr-byte, volume-byte, skip-boot-patch, partition-shift, disk-grow, omit-driver, stale-block, drop-write:payload).",
                               visibility: .hidden))
    var spec: String?

    /// The plan; a malformed SPEC is an error (a fault test that injects nothing would lie).
    func plan() throws -> FaultPlan {
        guard let spec else { return .none }
        return try FaultPlan(parsing: spec)
    }
}
