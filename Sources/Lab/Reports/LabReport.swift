import Foundation

/// Everything a run found, in the shape of `report.json`.
public struct LabReport: Sendable, Codable {
    public var tool: String
    public var shard: String?
    public var cells: [CellResult]
    public var summary: [String: Int]
    /// The selection the cells came from (before `--shard`), so `lab merge` can check shards
    /// belong together; nil in reports of older versions.
    public var suite: SuiteIdentity?
    /// For a merged report: the shards it was made from (`K/N directory`).
    public var merged: [String]?

    public init(cells: [CellResult], shard: Shard?, tool: String) {
        self.tool = tool
        self.shard = shard?.description
        self.cells = cells
        var s: [String: Int] = [:]
        for v in Verdict.allCases { s[v.rawValue] = cells.filter { $0.verdict == v }.count }
        summary = s
    }

    /// A regression: any cell failing (drift is reported but is not a regression).
    public var hasRegression: Bool { cells.contains { $0.verdict == .fail } }
    /// Cells the golden layer could not judge because an external input changed.
    public var hasDrift: Bool { cells.contains { $0.verdict == .drift } }

    /// Writes report.json, junit.xml, report.html and logs/ into `directory`; returns the HTML path.
    @discardableResult
    public func write(to directory: URL) throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        var copy = self
        // Console logs move into the report so it stays whole after work directories are removed.
        let logs = directory.appendingPathComponent("logs")
        try fm.createDirectory(at: logs, withIntermediateDirectories: true)
        for c in copy.cells.indices {
            for r in copy.cells[c].records.indices {
                for (label, path) in copy.cells[c].records[r].outcome.attachments where fm.fileExists(atPath: path) {
                    let name = "\(copy.cells[c].cell.scenario).\(copy.cells[c].cell.target).\(copy.cells[c].records[r].name.replacingOccurrences(of: ":", with: "-")).\(label).log"
                    let dest = logs.appendingPathComponent(name)
                    if dest.path != path {
                        try? fm.removeItem(at: dest)
                        try fm.copyItem(atPath: path, toPath: dest.path)
                    }
                    copy.cells[c].records[r].outcome.attachments[label] = "logs/\(name)"
                }
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(copy).write(to: directory.appendingPathComponent("report.json"))
        try Data(JUnitReport.render(copy).utf8).write(to: directory.appendingPathComponent("junit.xml"))
        let html = directory.appendingPathComponent("report.html")
        try Data(HTMLReport.render(copy, base: directory).utf8).write(to: html)
        return html
    }
}

extension LabReport {
    /// `lab run --repeat N`: the last run's results, each cell with a `repeat` record that passes
    /// when its verdict was the same in every run and fails (flaky) otherwise; and a summary line.
    public static func compareRuns(_ runs: [[CellResult]]) -> ([CellResult], String) {
        guard var results = runs.last else { return ([], "bootlab lab: repeat: no runs") }
        var flaky: [String] = []
        for i in results.indices {
            let id = results[i].cell.id
            let verdicts = runs.map { run in run.first { $0.cell.id == id }?.verdict.rawValue ?? "missing" }
            let same = Set(verdicts).count == 1
            if !same { flaky.append("\(id) (\(verdicts.joined(separator: ", ")))") }
            let outcome: StepOutcome = same ? .pass("same verdict in \(runs.count) runs: \(verdicts[0])")
                                            : .fail("flaky: verdicts differ across \(runs.count) runs: \(verdicts.joined(separator: ", "))")
            results[i].records.append(StepRecord(name: "repeat", kind: .validator, outcome: outcome, seconds: 0))
        }
        let line = flaky.isEmpty ? "bootlab lab: repeat: \(runs.count) runs, identical verdicts for all \(results.count) cells"
                                 : "bootlab lab: repeat: \(runs.count) runs, \(flaky.count) of \(results.count) cells changed verdict: \(flaky.joined(separator: "; "))"
        return (results, line)
    }
}
