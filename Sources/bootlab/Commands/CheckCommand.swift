import ArgumentParser
import BlockCore
import DiskFormats
import Foundation

/// `bootlab check FILE [--json]`: exit 0 clean, 2 corrupt, 1 could not check (as qemu-img check).
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check", abstract: "Check a VHDX file's structures (exit 0 clean, 2 corrupt, 1 could not check).")

    @Argument(help: "The VHDX file.") var file: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let report: CheckReport
        do {
            report = try VHDXCheck.run(path: file)
        } catch {
            writeStandardError("bootlab check: \(file): \(error)\n")
            throw ExitCode(1)
        }
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try enc.encode(report), as: UTF8.self))
        } else {
            for f in report.findings { print(f.description) }
            print(report.isCorrupt ? "\(report.corruptions.count) corruptions found in \(file)" : "No errors were found on the image.")
        }
        if report.exitCode != 0 { throw ExitCode(report.exitCode) }
    }
}
