import ArgumentParser
import BackupImage
import Exposure
import Foundation
import Frontends

/// How `mount` and `serve` open plugin files: the same passphrase options as `expose` (file,
/// environment, prompt — never argv), the vault, and the directory-tree rule.
struct PluginAccessOptions: ParsableArguments {
    @OptionGroup var passphrase: BackupCommand.PassphraseOptions
    @Option(name: .long, help: "The dedup vault directory of the exposed backups, if any.") var vault: String?
    @Flag(name: .long, help: "Allow plugin pointers that lead outside the plugin's directory tree.") var allowOutside = false

    /// Installs the options for the front-ends. A terminal prompt happens here, once, and only if
    /// one of `plugins` points at an encrypted backup — never later from a serving thread.
    func install(plugins: [String]) throws -> PluginFile.OpenOptions {
        var o = PluginFile.OpenOptions()
        o.vault = vault
        o.allowOutside = allowOutside
        if passphrase.passphraseFile != nil {
            // Read now: a mount may change its working directory, and a file may go away.
            o.passphrase = .bytes(try passphrase.source.resolve())
        } else if try plugins.contains(where: { try Self.needsPassphrase(plugin: $0, allowOutside: allowOutside) }) {
            o.passphrase = .bytes(try passphrase.source.resolve())
        }
        let final = o
        pluginOpenOptions.withLock { $0 = final }
        PluginDisk.registerAsVHDXParents(options: final)
        return final
    }

    static func needsPassphrase(plugin: String, allowOutside: Bool) throws -> Bool {
        guard PluginFile.isPlugin(path: plugin) else { return false }
        var o = PluginFile.OpenOptions()
        o.allowOutside = allowOutside
        let disk = try PluginFile.open(pluginPath: plugin, options: o)
        return try BackupImageReader.readHeader(path: try disk.backupPath()).header.isEncrypted
    }
}
