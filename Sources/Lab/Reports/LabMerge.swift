import Foundation

/// What a run's cells were chosen from, so shard reports can be checked to belong together:
/// every cell id of the selection before sharding, and a digest of those ids with the
/// definitions (scenario and target files' canonical JSON) they ran.
public struct SuiteIdentity: Sendable, Codable, Equatable {
    public var cells: [String]
    public var digest: String

    public static func make(cells: [Cell], suite: LabSuite) throws -> SuiteIdentity {
        let ids = cells.sorted().map(\.id)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var text = ids.joined(separator: "\n") + "\n"
        for name in Set(cells.map(\.scenario)).sorted() {
            guard var s = suite.scenarios.first(where: { $0.name == name }) else { continue }
            s.file = ""
            text += "scenario \(name) " + Digest.string(String(decoding: try encoder.encode(s), as: UTF8.self)) + "\n"
        }
        for name in Set(cells.map(\.target)).sorted() {
            guard let t = suite.targets[name] else { continue }
            text += "target \(name) " + Digest.string(String(decoding: try encoder.encode(t.profile), as: UTF8.self)) + "\n"
        }
        return SuiteIdentity(cells: ids, digest: Digest.string(text))
    }
}

/// A reason shard reports cannot be merged, naming the directories concerned.
public struct MergeError: Error, CustomStringConvertible, Sendable, Equatable {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// `bootlab lab merge DIR…`: the shards of one `lab run --shard K/N` suite combined into one
/// report. Refuses (a `MergeError`) when a directory holds no shard report, when shards disagree
/// on N or on the suite (its identity digest), when a shard appears twice or is missing, or when
/// a shard's cells are not the ones `--shard K/N` selects from the suite.
public enum LabMerge {
    public static func merge(directories: [URL], tool: String) throws -> LabReport {
        guard !directories.isEmpty else { throw MergeError("no shard directories given") }
        var shards: [(dir: URL, shard: Shard, report: LabReport)] = []
        for dir in directories {
            let url = dir.appendingPathComponent("report.json")
            guard let data = FileManager.default.contents(atPath: url.path) else {
                throw MergeError("\(dir.path): no report.json (a missing or failed shard job?)")
            }
            var report: LabReport
            do { report = try JSONDecoder().decode(LabReport.self, from: data) } catch {
                throw MergeError("\(url.path): not a lab report: \(error)")
            }
            guard let text = report.shard else { throw MergeError("\(url.path): not a shard report (run with --shard K/N)") }
            guard report.suite != nil else { throw MergeError("\(url.path): records no suite identity (made by an older bootlab); re-run the shard") }
            let shard: Shard
            do { shard = try Shard(parsing: text) } catch { throw MergeError("\(url.path): shard '\(text)': \(error)") }
            // Attachments are relative to their report: make them absolute so `write` copies them.
            for c in report.cells.indices {
                for r in report.cells[c].records.indices {
                    for (label, path) in report.cells[c].records[r].outcome.attachments where !path.hasPrefix("/") {
                        report.cells[c].records[r].outcome.attachments[label] = dir.appendingPathComponent(path).path
                    }
                }
            }
            shards.append((dir, shard, report))
        }
        let counts = Set(shards.map(\.shard.count))
        guard counts.count == 1, let n = counts.first else {
            throw MergeError("shards disagree on N: " + shards.map { "\($0.dir.path) is \($0.shard)" }.joined(separator: ", "))
        }
        let digests = Dictionary(grouping: shards, by: { $0.report.suite!.digest })
        guard digests.count == 1, let suite = shards.first?.report.suite else {
            let parts = digests.sorted { $0.key < $1.key }.map { "suite \($0.key.prefix(12)): \($0.value.map(\.dir.path).joined(separator: ", "))" }
            throw MergeError("shards disagree on the suite (scenario/target set digest): " + parts.joined(separator: "; "))
        }
        let byIndex = Dictionary(grouping: shards, by: \.shard.index)
        for (k, list) in byIndex.sorted(by: { $0.key < $1.key }) where list.count > 1 {
            throw MergeError("shard \(k)/\(n) appears \(list.count) times: " + list.map(\.dir.path).joined(separator: ", "))
        }
        // N comes from a file: name at most ten missing shards rather than walk 1...N.
        var missing: [Int] = []
        var k = 1
        while k <= n && missing.count < 10 {
            if byIndex[k] == nil { missing.append(k) }
            k += 1
        }
        guard missing.isEmpty else {
            let more = n - shards.count > missing.count ? " (and \(n - shards.count - missing.count) more)" : ""
            throw MergeError("missing shard\(missing.count == 1 ? "" : "s") " + missing.map { "\($0)/\(n)" }.joined(separator: ", ") + more + " of a \(suite.cells.count)-cell suite")
        }
        let all = suite.cells.map { id -> Cell in
            let parts = id.split(separator: "/", maxSplits: 1).map(String.init)
            return Cell(scenario: parts[0], target: parts.count > 1 ? parts[1] : "")
        }
        var cells: [CellResult] = []
        for s in shards.sorted(by: { $0.shard.index < $1.shard.index }) {
            let expected = s.shard.select(all).map(\.id)
            let got = s.report.cells.map(\.cell.id).sorted()
            guard expected.sorted() == got else {
                let lacking = Set(expected).subtracting(got).sorted()
                let extra = Set(got).subtracting(expected).sorted()
                throw MergeError("\(s.dir.path): shard \(s.shard) does not hold its cells"
                                 + (lacking.isEmpty ? "" : "; missing: " + lacking.joined(separator: ", "))
                                 + (extra.isEmpty ? "" : "; not its own: " + extra.joined(separator: ", ")))
            }
            cells += s.report.cells
        }
        let order = Dictionary(uniqueKeysWithValues: suite.cells.enumerated().map { ($0.element, $0.offset) })
        cells.sort { order[$0.cell.id, default: 0] < order[$1.cell.id, default: 0] }
        var merged = LabReport(cells: cells, shard: nil, tool: tool)
        merged.suite = suite
        merged.merged = shards.sorted { $0.shard.index < $1.shard.index }.map { "\($0.shard) \($0.dir.path)" }
        return merged
    }
}
