import ArgumentParser
import BlockCore
import BackupImage
import DiskFormats
import Foundation

/// `bootlab check FILE [--json]`: exit 0 clean, 2 corrupt, 1 could not check (as qemu-img check).
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check", abstract: "Check a VHDX file's structures, or verify every block of a backup image (exit 0 clean, 2 corrupt, 1 could not check).")

    @Argument(help: "The VHDX file or backup image.") var file: String
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var passphrase: BackupCommand.PassphraseOptions
    @Option(name: .long, help: "The dedup vault of a backup image, if any.") var vault: String?

    func run() throws {
        if let head = try? RawFile(path: file).read(at: 0, count: 16), BackupImageReader.looksLikeBackupImage(firstBytes: head) {
            // Backup images: every block decoded and verified (digest or GCM tag).
            let r = BackupImageReader.verify(path: file, passphrase: passphrase.source, vault: vault)
            if json {
                try BackupCommand.printJSON(r)
            } else {
                for f in r.findings { print(f) }
                print(r.isClean ? "No errors were found on the image." : "\(r.findings.count) problems found in \(file)")
            }
            if r.exitCode != 0 { throw ExitCode(r.exitCode) }
            return
        }
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
