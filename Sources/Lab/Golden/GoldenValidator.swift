import Foundation

/// Compares the digest of every deterministic artefact and a readable layout dump with the files
/// under `Golden/<scenario>/<target>/`: `digests.txt`, `layout.txt`, `inputs.json` (what the
/// outputs were made from, `GoldenInputs`) and `versions.json` (package versions, information only).
/// Equal outputs pass. Different outputs are judged from the inputs: the same inputs → regression
/// (always a failure, with the layout diff); a generated disk that changed while every external
/// input it read is unchanged → regression of the generator; a changed external input → drift,
/// naming the input; the repository's own inputs changed → stale goldens (a failure: re-record).
public struct GoldenValidator: Validator {
    public typealias LayoutDumper = @Sendable (URL) throws -> String
    public static let recordName = "golden"
    public let name = GoldenValidator.recordName
    /// Layout dumpers by disk format; a format without one is recorded by digest only.
    public let dumpers: [String: LayoutDumper]

    public init(dumpers: [String: LayoutDumper] = NativeLayout.dumpers.merging(
                    ["raw": { try RawDiskLayout.dump(disk: $0) }, "vhdx": { VHDXLayout.dump(file: $0) }]) { _, b in b }) {
        self.dumpers = dumpers
    }

    public static func directory(for context: CellContext) -> URL {
        context.options.goldenDirectory.appendingPathComponent(context.scenario.name).appendingPathComponent(context.target.name)
    }

    public func validate(in context: CellContext) throws -> StepOutcome {
        let ordered = context.artefacts.filter(\.deterministic).sorted { ($0.machine, $0.role) < ($1.machine, $1.role) }
        var digests = ""
        var layout = ""
        for a in ordered {
            for path in a.files {
                let url = URL(fileURLWithPath: path)
                let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
                digests += "\(a.machine) \(a.role) \(url.lastPathComponent) sha256:\(try Digest.file(url)) size:\(size)\n"
            }
            // Only whole disks get a partition-table dump; a bare volume has none.
            if a.role != ArtefactRole.sourceVolume, case .file(let path, let format) = a.disk, let dump = dumpers[format] {
                layout += "## \(a.machine) \(a.role) (\(format))\n" + (try dump(URL(fileURLWithPath: path))) + "\n"
            }
        }
        var packages: [String: String] = [:]
        for g in context.generated.values { packages.merge(g.versions.packages) { a, _ in a } }
        let inputs = try GoldenInputs.current(context)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]

        let dir = Self.directory(for: context)
        if context.options.updateGolden {
            // Recorded by the runner after every other validator has passed: a failing cell's
            // outputs are never goldens. The diff against what is recorded now is shown.
            let old = ((try? String(contentsOf: dir.appendingPathComponent("digests.txt"), encoding: .utf8)) ?? "") + "\n"
                + ((try? String(contentsOf: dir.appendingPathComponent("layout.txt"), encoding: .utf8)) ?? "")
            let diff = (try? Self.diff(old: old, new: digests + "\n" + layout)) ?? ""
            context.pendingGolden = PendingGolden(directory: dir, files: [
                ("digests.txt", Data(digests.utf8)),
                ("layout.txt", Data(layout.utf8)),
                ("inputs.json", try encoder.encode(inputs) + Data("\n".utf8)),
                ("versions.json", try encoder.encode(ToolVersions(packages: packages)) + Data("\n".utf8)),
            ], diff: diff)
            return .pass(diff.isEmpty ? "golden record pending (unchanged)" : "golden record pending (outputs changed)", details: diff)
        }
        guard let oldDigests = try? String(contentsOf: dir.appendingPathComponent("digests.txt"), encoding: .utf8) else {
            return .fail("no golden files in \(dir.path) (record them with --update-golden)")
        }
        let oldLayout = (try? String(contentsOf: dir.appendingPathComponent("layout.txt"), encoding: .utf8)) ?? ""
        let inputsURL = dir.appendingPathComponent("inputs.json")
        guard FileManager.default.fileExists(atPath: inputsURL.path) else {
            return .fail("stale goldens: no inputs.json in \(dir.path), so no verdict can be keyed to inputs; re-record with --update-golden")
        }
        let recorded: GoldenInputs
        do {
            recorded = try JSONDecoder().decode(GoldenInputs.self, from: Data(contentsOf: inputsURL))
        } catch {
            return .fail("stale goldens: \(inputsURL.path) cannot be read (\(error)); re-record with --update-golden")
        }
        if oldDigests == digests && oldLayout == layout {
            var message = "\(ordered.count) artefacts match golden digests"
            if inputs != recorded { message += " (recorded inputs differ, outputs identical)" }
            return .pass(message)
        }
        let diff = (try? Self.diff(old: oldDigests + "\n" + oldLayout, new: digests + "\n" + layout)) ?? ""
        let what = oldLayout == layout ? "digests differ, layout unchanged" : "layout differs"
        switch inputs.explain(changeFrom: recorded) {
        case .sameInputs:
            return .fail("regression: \(what) with the same inputs", details: diff)
        case .generatorRegression(let reasons):
            return .fail("regression of the generator: \(reasons.joined(separator: "; "))", details: diff)
        case .stale(let reasons):
            return .fail("stale goldens: \(reasons.joined(separator: "; ")); \(what); re-record with --update-golden", details: diff)
        case .drift(let reasons):
            return StepOutcome(.drift, "input drift: \(reasons.joined(separator: "; "))", details: diff)
        }
    }

    /// Writes a pending record when every other validator passed; returns the golden record's
    /// final outcome.
    static func commit(_ pending: PendingGolden, otherRecords: [StepRecord]) -> StepOutcome {
        let failed = otherRecords.filter { $0.outcome.verdict == .fail }.map(\.name)
        guard failed.isEmpty else {
            return .fail("not recorded: \(failed.joined(separator: ", ")) failed, and a failing cell's outputs are never goldens", details: pending.diff)
        }
        do {
            try FileManager.default.createDirectory(at: pending.directory, withIntermediateDirectories: true)
            for (name, data) in pending.files { try data.write(to: pending.directory.appendingPathComponent(name)) }
        } catch {
            return .fail("not recorded: \(error)", details: pending.diff)
        }
        let changed = pending.diff.split(separator: "\n").filter { ($0.hasPrefix("+") || $0.hasPrefix("-")) && !$0.hasPrefix("+++") && !$0.hasPrefix("---") }.count
        return .pass("golden files written to \(pending.directory.path)" + (changed == 0 ? " (unchanged)" : " (\(changed) lines changed)"), details: pending.diff)
    }

    static func diff(old: String, new: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-diff-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = dir.appendingPathComponent("golden"), b = dir.appendingPathComponent("actual")
        try Data(old.utf8).write(to: a)
        try Data(new.utf8).write(to: b)
        return try Shell.run("diff", ["-u", "--label", "golden", "--label", "actual", a.path, b.path], check: false).stdout
    }
}

/// A golden record waiting for the cell's other validators (`--update-golden`).
public struct PendingGolden: @unchecked Sendable {
    // @unchecked: immutable value of Data and URL.
    public var directory: URL
    public var files: [(String, Data)]
    /// `diff -u` of the recorded digests and layout against the new ones.
    public var diff: String
}
