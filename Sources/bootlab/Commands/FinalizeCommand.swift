import ArgumentParser
import BlockCore
import Exposure
import Foundation

/// `bootlab finalize PLUGIN`: the complete replacement becomes PLUGIN, atomically; the old
/// plugin stays as PLUGIN.plugin until `--drop-plugin`.
struct FinalizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finalize",
        abstract: "Make a plugin's complete replacement the real native file (atomic; the plugin is kept as PLUGIN.plugin).",
        discussion: """
        Applies the write overlay (PLUGIN.overlay, or --overlay) to the replacement, marks the \
        pointer materialized, writes the format signature, then renames the replacement over \
        PLUGIN. A crash at any moment leaves the old or the new arrangement; running finalize \
        again completes it. Stop a writable mount of the plugin first.
        """
    )

    @Argument(help: "The plugin file.") var plugin: String
    @Option(help: "The write overlay to apply (default: PLUGIN.overlay when present).") var overlay: String?
    @Flag(help: "Remove the old plugin (PLUGIN.plugin) and its companions after finalizing.") var dropPlugin = false
    @Flag(help: "Print a JSON report.") var json = false
    @Option(name: .customLong("inject-fault"), help: ArgumentHelp("Kill this process at a point (crash tests): kill:POINT.", visibility: .hidden))
    var fault: String?
    @OptionGroup var access: PluginAccessOptions

    func run() throws {
        do {
            let faults = try fault.map(MaterializeFaults.init(parsing:)) ?? .none
            // A complete replacement never opens the backup: no passphrase is asked for.
            var options = PluginFile.OpenOptions()
            options.allowOutside = access.allowOutside
            options.vault = access.vault
            let report = try Replacement.finalize(pluginPath: plugin, overlayPath: overlay, options: options, faults: faults)
            if dropPlugin { try Replacement.dropOldPlugin(pluginPath: plugin) }
            if json {
                print(try jsonText(report))
            } else {
                print("finalized: \(report.plugin) is the native file (\(report.fileSize) bytes, \(report.overlayBytes) overlay bytes applied)"
                      + (dropPlugin ? "; old plugin removed" : "; the plugin is kept as \(report.oldPlugin)"))
            }
        } catch {
            writeStandardError("bootlab finalize: \(error)\n")
            throw ExitCode(1)
        }
    }
}
