import BackupImage
import BlockCore
import Foundation

/// Backs up every source machine as the scenario says: volume-only (partition 1 of the source
/// disk: the MBR-less backup of the method) or whole disk, with its block size, compression,
/// encryption and vault; then each change set becomes one incremental (`--parent`) of a copy of
/// the disk with the change applied. Image IDs derive from the seed, so backups are
/// byte-identical run to run. Records the digest of every backup file for the immutability check.
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
        let states = context.directory.appendingPathComponent("states")
        try? FileManager.default.removeItem(at: states)
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
            o.partition = spec.kind == .volumeOnly ? machine.rootPartitionNumber : nil
            o.label = machine.name
            var out = dir.appendingPathComponent("\(machine.name).bli").path
            let summary = try BackupImageWriter.create(sourcePath: g.diskPath, outputPath: out, options: o)
            var chain = [out]
            var disk = g.diskPath
            var inherited: [Int] = []
            for (index, change) in spec.incrementals.enumerated() {
                let next = states.appendingPathComponent("\(machine.name)-\(index + 1).raw").path
                try ChangeSetApplier.apply(change, index: index, seed: context.scenario.seed, machine: machine,
                                           previousDisk: disk, output: next, scratch: states.appendingPathComponent("files"))
                var io = o
                io.parentPath = out
                io.imageID = BackupCreateOptions.imageID(seed: "\(context.scenario.seed)/\(machine.name)/incremental-\(index + 1)")
                let incOut = dir.appendingPathComponent("\(machine.name).inc\(index + 1).bli").path
                let s = try BackupImageWriter.create(sourcePath: next, outputPath: incOut, options: io)
                inherited.append(s.inheritedBlocks)
                chain.append(incOut)
                out = incOut
                disk = next
            }
            context.backups[machine.name] = out
            context.finalStates[machine.name] = ChangeSetApplier.finalState(of: spec.incrementals, seed: context.scenario.seed,
                                                                            machine: machine.name, disk: disk)
            context.put(Artefact(role: ArtefactRole.backup, machine: machine.name, disk: .file(path: out, format: "bli"), files: chain))
            notes.append("\(machine.name): \(spec.kind.rawValue), \(summary.blocks) blocks" + (o.encrypt ? ", encrypted" : "") + (o.vaultDirectory != nil ? ", vault" : "")
                         + (inherited.isEmpty ? "" : ", \(inherited.count) incrementals (inherited blocks \(inherited.map(String.init).joined(separator: "/")))"))
        }
        context.backupDigests = try Self.digests(of: dir)
        return .pass(notes.joined(separator: "; "))
    }

    /// SHA-256 of every backup image and vault file under the plugin directory (plugin files,
    /// which `expose` writes later, are not backup data).
    public static func digests(of dir: URL) throws -> [String: String] {
        var out: [String: String] = [:]
        guard let e = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: [.isRegularFileKey]) else { return out }
        for case let url as URL in e {
            guard (try url.resourceValues(forKeys: [.isRegularFileKey])).isRegularFile == true else { continue }
            let rel = url.path.replacingOccurrences(of: dir.path + "/", with: "")
            guard rel.hasSuffix(".bli") || rel.hasPrefix("vault-") else { continue }
            out[rel] = try Digest.file(url)
        }
        return out
    }
}
