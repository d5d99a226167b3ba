import ArgumentParser
import BlockCore
import BackupImage
import DiskFormats
import Foundation

/// `bootlab check FILE [--json]`: exit 0 clean, 2 corrupt, 1 could not check (as qemu-img check).
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check", abstract: "Check a disk image's structures (any native format), or verify every block of a backup image (exit 0 clean, 2 corrupt, 1 could not check).")

    @Argument(help: "The disk image (VHDX, VMDK, VHD, qcow2, VDI — detected by content) or backup image.") var file: String
    @Option(name: .customShort("f"), help: "The image's format, when detection by content should not decide.") var format: String?
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
            report = try checker().check(path: file)
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

    /// The format's checker: the one `-f` names, else the one the content names.
    private func checker() throws -> any DiskFormatDriver {
        if let format {
            guard let d = DiskFormatRegistry.driver(named: format) else {
                throw ValidationError("-f \(format): not a format check knows (\(DiskFormatRegistry.names.joined(separator: ", ")))")
            }
            return d
        }
        guard let d = try DiskFormatRegistry.detect(path: file) else {
            throw CheckUnsupported(reason: "not a disk image format with structures to check (raw, or unknown); known: \(DiskFormatRegistry.names.joined(separator: ", "))")
        }
        return d
    }
}

struct CheckUnsupported: Error, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}
