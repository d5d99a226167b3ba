import ArgumentParser
import BlockCore
import DiskFormats
import Foundation

/// `bootlab info FILE [--json]`: the format is detected by magic.
struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "Describe a disk image (format detected by content).")

    /// Formats `info` knows, tried in order (raw is the fallback). Add new formats here.
    static let probes: [any ImageInfoProbe] = [BackupImageInfoProbe(), PluginInfoProbe()] + ImageInfoProbes.diskFormats

    @Argument(help: "The image file.") var file: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        do {
            let info = try ImageInfoProbes.describe(path: file, probes: Self.probes)
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .withoutEscapingSlashes]
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
