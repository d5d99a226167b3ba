import Foundation

/// Compares the digest of every deterministic artefact and a readable layout dump with the files
/// under `Golden/<scenario>/<target>/` (`digests.txt`, `layout.txt`, `versions.json`).
/// A mismatch with changed input tool versions is **input drift**; with the same versions it is
/// a regression, shown as a diff of the layout.
public struct GoldenValidator: Validator {
    public typealias LayoutDumper = @Sendable (URL) throws -> String
    public let name = "golden"
    /// Layout dumpers by disk format; a format without one is recorded by digest only.
    public let dumpers: [String: LayoutDumper]

    public init(dumpers: [String: LayoutDumper] = ["raw": { try MBRLayout.dump(disk: $0) },
                                                   "vhdx": { VHDXLayout.dump(file: $0) }]) {
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
        var recipe = ToolVersions.recipe
        for g in context.generated.values {
            packages.merge(g.versions.packages) { a, _ in a }
            recipe = g.versions.recipe
        }
        let versions = ToolVersions(recipe: recipe, packages: packages)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let versionsJSON = try encoder.encode(versions)

        let dir = Self.directory(for: context)
        let fm = FileManager.default
        if context.options.updateGolden {
            try fm.createDirectory(at: dir, withIntermediateDirectories: true)
            try Data(digests.utf8).write(to: dir.appendingPathComponent("digests.txt"))
            try Data(layout.utf8).write(to: dir.appendingPathComponent("layout.txt"))
            try (versionsJSON + Data("\n".utf8)).write(to: dir.appendingPathComponent("versions.json"))
            return .pass("golden files written to \(dir.path)")
        }
        guard let oldDigests = try? String(contentsOf: dir.appendingPathComponent("digests.txt"), encoding: .utf8) else {
            return .fail("no golden files in \(dir.path) (record them with --update-golden)")
        }
        let oldLayout = (try? String(contentsOf: dir.appendingPathComponent("layout.txt"), encoding: .utf8)) ?? ""
        let oldVersions = (try? Data(contentsOf: dir.appendingPathComponent("versions.json"))).flatMap { try? JSONDecoder().decode(ToolVersions.self, from: $0) }
        if oldDigests == digests && oldLayout == layout {
            return .pass("\(ordered.count) artefacts match golden digests")
        }
        let diff = (try? Self.diff(old: oldDigests + "\n" + oldLayout, new: digests + "\n" + layout)) ?? ""
        let changes = oldVersions.map { versions.changes(from: $0) } ?? ["no recorded versions.json"]
        if !changes.isEmpty {
            return StepOutcome(.drift, "input drift: \(changes.joined(separator: ", "))", details: diff)
        }
        let what = oldLayout == layout ? "digests differ, layout unchanged" : "layout differs"
        return .fail("regression: \(what) with the same tool versions", details: diff)
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
