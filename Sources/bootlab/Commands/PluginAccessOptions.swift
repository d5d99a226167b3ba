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

    /// The open options for `plugins`. A terminal prompt happens here, once, and only if one of
    /// `plugins` points at an encrypted backup — never later from a serving thread.
    func openOptions(plugins: [String]) throws -> PluginFile.OpenOptions {
        var o = PluginFile.OpenOptions()
        o.vault = vault
        o.allowOutside = allowOutside
        if passphrase.passphraseFile != nil {
            // Read now: a mount may change its working directory, and a file may go away.
            o.passphrase = .bytes(try passphrase.source.resolve())
        } else if try plugins.contains(where: { try Self.needsPassphrase(plugin: $0, allowOutside: allowOutside) }) {
            o.passphrase = .bytes(try passphrase.source.resolve())
        }
        return o
    }

    static func needsPassphrase(plugin: String, allowOutside: Bool) throws -> Bool {
        guard PluginFile.isPlugin(path: plugin) else { return false }
        var o = PluginFile.OpenOptions()
        o.allowOutside = allowOutside
        let disk = try PluginFile.open(pluginPath: plugin, options: o)
        return try BackupImageReader.readHeader(path: try disk.backupPath()).header.isEncrypted
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
