import ArgumentParser
import BlockCore
import DiskFormats
import Foundation

/// `bootlab info FILE [--json]`: the format is detected by magic.
struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "Describe a disk image (format detected by content).")

    /// What DiskFormats cannot describe on its own (it knows the registered disk formats and raw).
    static let probes: [any ImageInfoProbe] = [BackupImageInfoProbe(), VolumeSetInfoProbe()]

    @Argument(help: "The image file.") var file: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        do {
            var info = try ImageInfoProbes.describe(path: file, probes: Self.probes)
            try PluginInfo.append(to: &info, path: file)
            if json {
                let enc = JSONEncoder()
                // Sorted keys: the same file prints the same bytes (JSONEncoder's order is not stable).
                enc.outputFormatting = [.prettyPrinted, .withoutEscapingSlashes, .sortedKeys]
                print(String(decoding: try enc.encode(info), as: UTF8.self))
            } else {
                print(info.text)
            }
        } catch {
            writeStandardError("bootlab info: \(error)\n")
            throw ExitCode(1)
        }
    }
}
