import BackupImage
import BlockCore
import Exposure
import Foundation
import Processes

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
        if let command = spec.command, let source = spec.source {
            return try runUserTool(command: command, source: source, in: context, directory: dir)
        }
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
            if spec.kind == .volumeSet {
                // Every partition of the machine's GPT, one image each, and the manifest.
                guard machine.isUEFI else { return .fail("\(machine.name): a volume set needs a GPT (UEFI) machine") }
                let manifest = dir.appendingPathComponent("\(machine.name).blset").path
                let set = try BackupSetWriter.create(sourcePath: g.diskPath, manifestPath: manifest, partitions: [1, machine.rootPartitionNumber], options: o)
                context.backups[machine.name] = manifest
                context.finalStates[machine.name] = ChangeSetApplier.finalState(of: [], seed: context.scenario.seed, machine: machine.name, disk: g.diskPath)
                context.put(Artefact(role: ArtefactRole.backup, machine: machine.name, disk: .file(path: manifest, format: "blset"),
                                     files: [manifest] + set.volumes.map(\.path)))
                notes.append("\(machine.name): volume set of \(set.volumes.count) (\(set.volumes.map { "\($0.blocks) blocks" }.joined(separator: ", ")))"
                             + (o.encrypt ? ", encrypted" : ""))
                continue
            }
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

    /// How long a user's backup tool may run per machine before it is stopped (a hang is a failure).
    public static let userToolTimeout: Double = 600

    /// A user's backup tool (`backup.command`) writes each machine's backup in its own format;
    /// `backup.source` says how `expose --source` reads it (docs/bring-your-own-format.md).
    /// Placeholders are substituted per argument, never through a shell; the tool runs in the
    /// scenario's directory with a bounded time.
    func runUserTool(command: [String], source: [String], in context: CellContext, directory dir: URL) throws -> StepOutcome {
        let scenarioDir = Self.scenarioDirectory(context)
        for f in context.scenario.backup.sourceFiles {
            let from = URL(fileURLWithPath: scenarioDir + "/" + f)
            let to = dir.appendingPathComponent(from.lastPathComponent)
            try? FileManager.default.removeItem(at: to)
            try FileManager.default.copyItem(at: from, to: to)
        }
        var notes: [String] = []
        for machine in context.scenario.machines {
            guard let g = context.generated[machine.name] else { return .fail("\(machine.name): no generated disk") }
            let out = dir.appendingPathComponent("\(machine.name).backup").path
            let values = ["{source}": context.scenario.backup.kind == .disk ? g.diskPath : g.volumePath, "{out}": out,
                          "{dir}": dir.path, "{machine}": machine.name, "{scenario_dir}": scenarioDir]
            let argv = command.map { Self.substitute($0, values) }
            let r = try Command(argv, workingDirectory: scenarioDir, stderr: .stdout).run(timeout: Self.userToolTimeout, check: false)
            guard !r.timedOut else {
                return .fail("\(machine.name): the backup command \(argv.first!) did not finish within \(Int(Self.userToolTimeout)) s", details: r.stdoutText)
            }
            guard r.termination.succeeded else {
                return .fail("\(machine.name): the backup command \(argv.first!) \(r.termination)", details: r.stdoutText)
            }
            guard FileManager.default.fileExists(atPath: out) else {
                return .fail("\(machine.name): the backup command exited 0 but wrote no \(out)", details: r.stdoutText)
            }
            // The source words, with paths relative to the scenario's directory made absolute
            // (expose records them relative to the plugin's directory when they lie inside it).
            var words = source.map { Self.substitute($0, values) }
            let kindWord = BackupSourceSpec.Kind(rawValue: words[0]) != nil && words.count > 1
            for i in words.indices where !(kindWord && i == 0) {
                words[i] = Self.absolutized(words[i], in: scenarioDir)
            }
            context.sources[machine.name] = try BackupSourceSpec(words: words)
            context.backups[machine.name] = out
            context.finalStates[machine.name] = ChangeSetApplier.finalState(of: [], seed: context.scenario.seed, machine: machine.name, disk: g.diskPath)
            // Not golden: a user's tool need not write the same bytes twice (qemu-img's VMDK has a
            // random CID). The plugin's digest pins the content: its pointer holds the source's
            // size and sampled digests, and its skeleton the extents.
            context.put(Artefact(role: ArtefactRole.backup, machine: machine.name, disk: .file(path: out, format: "user"), files: [out],
                                 deterministic: false))
            let size = (try? FileManager.default.attributesOfItem(atPath: out)[.size] as? NSNumber)?.uint64Value ?? 0
            notes.append("\(machine.name): \(context.scenario.backup.kind.rawValue) by \((argv.first! as NSString).lastPathComponent), \(size) bytes")
        }
        context.backupDigests = try Self.digests(of: dir)
        return .pass(notes.joined(separator: "; "))
    }

    /// The directory of the scenario's file (`Scenario.file` is relative to the suite directory's parent).
    static func scenarioDirectory(_ context: CellContext) -> String {
        let file = context.scenario.file
        let url = file.hasPrefix("/") ? URL(fileURLWithPath: file) : context.suite.directory.deletingLastPathComponent().appendingPathComponent(file)
        return url.deletingLastPathComponent().standardizedFileURL.path
    }

    static func substitute(_ word: String, _ values: [String: String]) -> String {
        values.reduce(word) { $0.replacingOccurrences(of: $1.key, with: $1.value) }
    }

    /// `./x`, `../x`, `key=./x`: made absolute against `base`; anything else unchanged.
    static func absolutized(_ word: String, in base: String) -> String {
        func abs(_ p: String) -> String { p.hasPrefix("./") || p.hasPrefix("../") ? URL(fileURLWithPath: base + "/" + p).standardizedFileURL.path : p }
        if let eq = word.firstIndex(of: "="), !word[..<eq].contains("/") {
            return String(word[...eq]) + abs(String(word[word.index(after: eq)...]))
        }
        return abs(word)
    }

    /// SHA-256 of every backup image and vault file under the plugin directory (plugin files,
    /// which `expose` writes later, are not backup data).
    public static func digests(of dir: URL) throws -> [String: String] {
        var out: [String: String] = [:]
        guard let e = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: [.isRegularFileKey]) else { return out }
        for case let url as URL in e {
            guard (try url.resourceValues(forKeys: [.isRegularFileKey])).isRegularFile == true else { continue }
            let rel = url.path.replacingOccurrences(of: dir.path + "/", with: "")
            // .backup: what a user's backup tool wrote (`backup.command`).
            // .blset: a volume set's manifest.
            guard rel.hasSuffix(".bli") || rel.hasPrefix("vault-") || rel.hasSuffix(".backup") || rel.hasSuffix(".blset") else { continue }
            out[rel] = try Digest.file(url)
        }
        return out
    }
}
