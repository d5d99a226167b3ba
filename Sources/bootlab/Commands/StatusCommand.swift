import ArgumentParser
import BlockCore
import Exposure
import Foundation

/// `bootlab status PLUGIN`: how far the plugin's replacement is (QEMU block-job style).
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show how far a plugin's replacement file is (done/total bytes, rate, ETA).",
        discussion: "Reads PLUGIN.fill without locking it, so it works while a mount or a materialize fills it."
    )

    @Argument(help: "The plugin file.") var plugin: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        do {
            let s = try Replacement.status(pluginPath: plugin)
            if json {
                print(try jsonText(s))
                return
            }
            let pct = s.totalBytes == 0 ? 100 : s.doneBytes * 100 / s.totalBytes
            var line = "\(s.plugin): \(s.phase), \(s.doneBytes)/\(s.totalBytes) bytes (\(pct)%)"
            if s.running { line += ", running" }
            if let r = s.rateBytesPerSecond { line += ", \(r) B/s" }
            if let e = s.etaSeconds, s.running { line += ", ETA \(e) s" }
            print(line)
        } catch {
            writeStandardError("bootlab status: \(error)\n")
            throw ExitCode(1)
        }
    }
}
