import Foundation

/// The backup is never modified: the SHA-256 of every backup image and vault file, recorded right
/// after the backup step, is the same after everything else the cell did (exposure, mounts,
/// serving, boots, overlay writes). Runs last.
public struct ImmutabilityValidator: Validator {
    public let name = "backup-immutable"
    public init() {}

    public func validate(in context: CellContext) throws -> StepOutcome {
        let before = context.backupDigests
        guard !before.isEmpty else { return .fail("no backup digests were recorded after the backup step") }
        let after = try BackupStep.digests(of: ExposeStep.pluginDirectory(context))
        var problems: [String] = []
        for (file, digest) in before.sorted(by: { $0.key < $1.key }) {
            guard let now = after[file] else { problems.append("\(file) disappeared"); continue }
            if now != digest { problems.append("\(file) changed: sha256 \(digest.prefix(16)) → \(now.prefix(16))") }
        }
        for file in after.keys.sorted() where before[file] == nil { problems.append("\(file) appeared") }
        if !problems.isEmpty { return .fail("backup modified: " + problems.joined(separator: "; ")) }
        return .pass("\(before.count) backup files unchanged (sha256)")
    }
}
