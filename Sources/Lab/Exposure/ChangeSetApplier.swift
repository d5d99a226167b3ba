import BlockCore
import Foundation

/// Applies a scenario's change sets to copies of a source disk, one state per change set, with
/// the file system's own tools working at the partition's offset (`debugfs -w` for ext4, mtools
/// for FAT) and every timestamp fixed: same seed and tool versions → same bytes, so each
/// incremental backup is byte-identical run to run.
public enum ChangeSetApplier {
    /// A file the final state must hold, with its exact contents' digest.
    public struct ExpectedFile: Sendable, Codable, Equatable {
        public var path: String
        public var size: UInt64
        public var sha256: String
    }

    /// What the chain of states ends with: files that must read back and paths that must be gone.
    public struct FinalState: Sendable, Codable, Equatable {
        public var disk: String
        public var present: [ExpectedFile]
        public var deleted: [String]
    }

    /// The seeded pseudo-random contents of a written file (change set `index`, `path`).
    public static func contents(seed: UInt64, machine: String, index: Int, path: String, size: UInt64) -> [UInt8] {
        Digest.derivedBytes(seed: seed, "change/\(machine)/\(index)/\(path)", count: Int(size))
    }

    /// Writes `disk` (a copy of the previous state) into `output`, then applies change set `index`.
    public static func apply(_ change: ChangeSet, index: Int, seed: UInt64, machine: SourceMachine,
                             previousDisk: String, output: String, scratch: URL) throws {
        let fm = FileManager.default
        try? fm.removeItem(atPath: output)
        try fm.createDirectory(at: URL(fileURLWithPath: output).deletingLastPathComponent(), withIntermediateDirectories: true)
        try Shell.run("cp", ["--sparse=always", previousDisk, output])
        try fm.createDirectory(at: scratch, withIntermediateDirectories: true)
        let offset = machine.partitionStart * 512
        var files: [(String, String)] = []
        for (i, w) in change.writes.enumerated() {
            let local = scratch.appendingPathComponent("w\(index)-\(i).bin")
            try Data(contents(seed: seed, machine: machine.name, index: index, path: w.path, size: w.size)).write(to: local)
            // mtools keeps the source's mtime with -m: fix it so FAT entries are deterministic.
            try fm.setAttributes([.modificationDate: Date(timeIntervalSince1970: Double(DiskGenerator.fixedTime))], ofItemAtPath: local.path)
            files.append((local.path, w.path))
        }
        let dirs = Set(change.writes.map { URL(fileURLWithPath: $0.path).deletingLastPathComponent().path }).filter { $0 != "/" }.sorted()
        switch machine.filesystem {
        case .ext4:
            var script = ""
            // Only missing directories: debugfs 1.47's `mkdir` of an existing name leaves an
            // allocated, unlinked inode behind (e2fsck then finds shared blocks).
            for d in dirs {
                let probe = try Shell.run("debugfs", ["-R", "stat \(d)", "\(output)?offset=\(offset)"], check: false)
                if probe.stderr.contains("File not found") { script += "mkdir \(d)\n" }
            }
            for p in change.deletes { script += "rm \(p)\n" }
            // debugfs `write` refuses to replace: remove first (a no-op when absent).
            for (local, path) in files { script += "rm \(path)\nwrite \(local) \(path)\n" }
            let cmd = scratch.appendingPathComponent("debugfs-\(index).txt")
            try Data(script.utf8).write(to: cmd)
            let r = try Shell.run("debugfs", ["-w", "-f", cmd.path, "\(output)?offset=\(offset)"],
                                  environment: ["E2FSPROGS_FAKE_TIME": String(DiskGenerator.fixedTime)])
            let bad = r.stderr.split(separator: "\n").filter {
                !$0.hasPrefix("debugfs ") && !$0.contains("File not found by ext2_lookup") && !$0.contains("Ext2 directory already exists")
                    && !$0.contains("Ext2 file already exists") && !$0.contains("rm: ") && !$0.contains("mkdir: ")
            }
            if !bad.isEmpty { throw LabError.tool("debugfs", reason: "on \(output): \(bad.joined(separator: " | "))") }
            // Prove the file system is still consistent before anyone backs it up.
            let fsck = try Shell.run("e2fsck", ["-fn", "\(output)?offset=\(offset)"], check: false)
            guard fsck.status == 0 else { throw LabError.tool("e2fsck", reason: "after change set \(index + 1): \(fsck.stdout.suffix(400))") }
        case .fat32:
            let image = "\(output)@@\(offset)"
            let env = ["SOURCE_DATE_EPOCH": String(DiskGenerator.fixedTime), "MTOOLS_SKIP_CHECK": "1"]
            for d in dirs { _ = try Shell.run("mmd", ["-D", "s", "-i", image, "::\(d)"], environment: env, check: false) }
            for p in change.deletes { try Shell.run("mdel", ["-i", image, "::\(p)"], environment: env) }
            for (local, path) in files {
                try Shell.run("mcopy", ["-o", "-m", "-i", image, local, "::\(path)"], environment: env)
            }
        case .ntfs:
            throw LabError.argument("filesystem", reason: "change sets on ntfs volumes are not supported")
        }
    }

    /// Files written by any change set and not deleted later, with their final contents; and
    /// paths deleted and not written again.
    public static func finalState(of changes: [ChangeSet], seed: UInt64, machine: String, disk: String) -> FinalState {
        var present: [String: ExpectedFile] = [:]
        var deleted: Set<String> = []
        for (index, c) in changes.enumerated() {
            for p in c.deletes { present[p] = nil; deleted.insert(p) }
            for w in c.writes {
                let bytes = contents(seed: seed, machine: machine, index: index, path: w.path, size: w.size)
                present[w.path] = ExpectedFile(path: w.path, size: w.size, sha256: SHA256.hash(bytes).hex)
                deleted.remove(w.path)
            }
        }
        return FinalState(disk: disk, present: present.values.sorted { $0.path < $1.path }, deleted: deleted.sorted())
    }
}
