import BlockCore
import Foundation

/// After a chain of incrementals, the exposed disk (the last image) holds every file the change
/// sets wrote, with exactly the seeded contents, and none they deleted. Reads through the exposed
/// disk: converted to raw by `qemu-img` from the front-end, then the partition read with the file
/// system's own tools (`debugfs` / mtools) at the exposed partition start.
public struct ChangedFilesValidator: Validator {
    public let name = "incremental-files"
    public init() {}

    public func validate(in context: CellContext) throws -> StepOutcome {
        guard let fe = context.frontEnd else { return .fail("no front-end: the expose step did not run") }
        var notes: [String] = []
        for m in context.scenario.machines {
            guard let state = context.finalStates[m.name] else { return .fail("\(m.name): no backed-up state") }
            let raw = context.directory.appendingPathComponent("exposed-\(m.name).raw").path
            try QemuImg.convertToRaw(imageOptions: fe.imageOptions(machine: m.name), output: raw)
            defer { try? FileManager.default.removeItem(atPath: raw) }
            let start = context.scenario.backup.kind == .disk ? m.partitionStart : (context.scenario.backup.exposePartitionStart ?? m.partitionStart)
            let offset = start * 512
            let scratch = context.directory.appendingPathComponent("readback")
            try? FileManager.default.removeItem(at: scratch)
            try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
            for f in state.present {
                let local = scratch.appendingPathComponent(URL(fileURLWithPath: f.path).lastPathComponent).path
                try extract(m, image: raw, offset: offset, path: f.path, to: local)
                guard FileManager.default.fileExists(atPath: local) else {
                    return .fail("\(m.name): \(f.path) is missing on the exposed disk")
                }
                let got = try Digest.file(URL(fileURLWithPath: local))
                let size = (try FileManager.default.attributesOfItem(atPath: local)[.size] as? NSNumber)?.uint64Value ?? 0
                guard got == f.sha256, size == f.size else {
                    return .fail("\(m.name): \(f.path) on the exposed disk is \(size) bytes sha256 \(got.prefix(16)); expected \(f.size) bytes sha256 \(f.sha256.prefix(16))")
                }
            }
            for path in state.deleted {
                let local = scratch.appendingPathComponent("deleted-" + URL(fileURLWithPath: path).lastPathComponent).path
                try extract(m, image: raw, offset: offset, path: path, to: local)
                if FileManager.default.fileExists(atPath: local) { return .fail("\(m.name): \(path) was deleted but is still on the exposed disk") }
            }
            notes.append("\(m.name): \(state.present.count) changed files read back exactly" + (state.deleted.isEmpty ? "" : ", \(state.deleted.count) deleted absent"))
        }
        return .pass(notes.joined(separator: "; "))
    }

    /// Copies `path` from the file system at `offset` of `image` to `local`; leaves no file if absent.
    func extract(_ m: SourceMachine, image: String, offset: UInt64, path: String, to local: String) throws {
        try? FileManager.default.removeItem(atPath: local)
        switch m.filesystem {
        case .ext4:
            let r = try Shell.run("debugfs", ["-R", "dump \(path) \(local)", "\(image)?offset=\(offset)"], check: false)
            if r.stderr.contains("File not found") { try? FileManager.default.removeItem(atPath: local) }
        case .fat32:
            _ = try Shell.run("mcopy", ["-n", "-i", "\(image)@@\(offset)", "::\(path)", local],
                              environment: ["MTOOLS_SKIP_CHECK": "1"], check: false)
        case .ntfs:
            throw LabError.argument("filesystem", reason: "change sets on ntfs volumes are not supported")
        }
    }
}
