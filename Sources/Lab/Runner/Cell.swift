/// One scenario × target pair: the unit the runner schedules, shards and reports.
public struct Cell: Sendable, Hashable, Codable, Comparable {
    public var scenario: String
    public var target: String
    public var id: String { "\(scenario)/\(target)" }

    public static func < (a: Cell, b: Cell) -> Bool { a.id < b.id }

    /// Every cell of the given scenarios, optionally restricted to some targets, sorted by id.
    public static func all(_ scenarios: [Scenario], targets filter: [String] = []) -> [Cell] {
        scenarios.flatMap { s in
            s.targets.filter { filter.isEmpty || filter.contains($0) }.map { Cell(scenario: s.name, target: $0) }
        }.sorted()
    }
}

/// `--shard K/N`: the cells whose position in the sorted list is K-1 modulo N. Deterministic, and
/// the N shards partition the suite.
public struct Shard: Sendable, Equatable, CustomStringConvertible {
    public var index: Int   // 1-based
    public var count: Int

    public init(index: Int, count: Int) throws {
        guard count >= 1, index >= 1, index <= count else { throw LabError.argument("shard \(index)/\(count)", reason: "need 1 ≤ K ≤ N") }
        self.index = index
        self.count = count
    }

    public init(parsing text: String) throws {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]) else { throw LabError.argument("shard '\(text)'", reason: "expected K/N, e.g. 1/3") }
        try self.init(index: k, count: n)
    }

    public func select(_ cells: [Cell]) -> [Cell] {
        cells.sorted().enumerated().filter { $0.offset % count == index - 1 }.map(\.element)
    }

    public var description: String { "\(index)/\(count)" }
}

/// One step's or validator's record in a cell.
public struct StepRecord: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable { case step, validator }
    public var name: String
    public var kind: Kind
    public var outcome: StepOutcome
    public var seconds: Double

    public init(name: String, kind: Kind, outcome: StepOutcome, seconds: Double) {
        self.name = name
        self.kind = kind
        self.outcome = outcome
        self.seconds = seconds
    }
}

public struct CellResult: Sendable, Codable, Equatable {
    public var cell: Cell
    public var expectation: String
    public var records: [StepRecord]
    public var seconds: Double

    /// fail beats drift beats pass; all-skip is skip.
    public var verdict: Verdict {
        let v = records.map(\.outcome.verdict)
        if v.contains(.fail) { return .fail }
        if v.contains(.drift) { return .drift }
        if v.contains(.pass) { return .pass }
        return .skip
    }
}
