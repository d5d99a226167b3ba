import BackupImage
import BlockCore
import Foundation

/// Backs up every source machine as the scenario says: volume-only (partition 1 of the source
/// disk: the MBR-less backup of the method) or whole disk, with its block size, compression,
/// encryption and vault. Image IDs derive from the seed, so backups are byte-identical run to run.
public struct BackupStep: LabStep {
    public let name = "backup"
    /// The lab's passphrase for encrypted scenarios (written to the cell's directory, never argv).
    public static let passphrase = "bootlab-lab-passphrase"
    public init() {}

    public static func passphraseFile(in context: CellContext) throws -> String {
        let path = context.directory.appendingPathComponent("passphrase").path
        try Data(passphrase.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    public func run(in context: CellContext) throws -> StepOutcome {
        let spec = context.scenario.backup
        let dir = context.directory.appendingPathComponent("plug")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var notes: [String] = []
        for machine in context.scenario.machines {
            guard let g = context.generated[machine.name] else { return .fail("\(machine.name): no generated disk") }
            var o = BackupCreateOptions()
            o.blockSize = UInt32(spec.blockSize)
            o.compression = spec.compression == .zstd ? .zstd : .none
            if spec.encryption == .aes256gcm {
                o.encrypt = true
                o.passphrase = .file(try Self.passphraseFile(in: context))
                // Lab backups favour speed; the product default stays at the secure cost.
                o.scrypt = .testing
            }
            if let vault = spec.vault { o.vaultDirectory = dir.appendingPathComponent("vault-\(vault)").path }
            o.imageID = BackupCreateOptions.imageID(seed: "\(context.scenario.seed)/\(machine.name)")
            o.partition = spec.kind == .volumeOnly ? 1 : nil
            o.label = machine.name
            let out = dir.appendingPathComponent("\(machine.name).bli").path
            let summary = try BackupImageWriter.create(sourcePath: g.diskPath, outputPath: out, options: o)
            context.backups[machine.name] = out
            context.put(Artefact(role: ArtefactRole.backup, machine: machine.name, disk: .file(path: out, format: "bli"), files: [out]))
            notes.append("\(machine.name): \(spec.kind.rawValue), \(summary.blocks) blocks" + (o.encrypt ? ", encrypted" : "") + (o.vaultDirectory != nil ? ", vault" : ""))
        }
        return .pass(notes.joined(separator: "; "))
    }
}
