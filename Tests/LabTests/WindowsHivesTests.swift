import Foundation
import Testing
import TestSupport
@testable import Lab

/// The windows-hives scenario's validator must fail, naming the value, when the reconfiguration
/// leaves a hive value wrong: here a target's storage service left out (`--inject-fault omit-driver:atapi`,
/// the explicit fault option) and no reconfiguration at all (the hives keep the source's offset).
@Suite(.serialized) struct WindowsHivesTests {
    static func run(_ scenario: Scenario, target: String, options configure: (inout RunOptions) -> Void) throws -> CellResult {
        var suite = try ScenarioParsingTests.suite()
        suite.scenarios = suite.scenarios.map { $0.name == scenario.name ? scenario : $0 }
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-windows-hives-\(getpid())")
        try? FileManager.default.removeItem(at: work)
        defer { try? FileManager.default.removeItem(at: work) }
        var options = RunOptions(goldenDirectory: ScenarioParsingTests.repo.appendingPathComponent("Golden"), bootTimeout: 90, workDirectory: work)
        configure(&options)
        return LabRunner(suite: suite, options: options).runCell(Cell(scenario: scenario.name, target: target))
    }

    static func summary(_ r: CellResult) -> String {
        r.records.map { "\($0.name)=\($0.outcome.verdict.rawValue): \($0.outcome.message.prefix(400))" }.joined(separator: "\n")
    }

    @Test func scenarioSaysItIsNotBooted() throws {
        let suite = try ScenarioParsingTests.suite()
        let s = try #require(suite.scenarios.first { $0.name == "windows-hives" })
        for t in s.targets {
            guard case .notBooted(let reason) = s.expectation(for: t) else { Issue.record("\(t): \(s.expectation(for: t))"); continue }
            #expect(reason.contains("no Windows kernel"))
            let target = try #require(suite.targets[t])
            let names = Pipeline.standard(for: s, target: target).validators.map(\.name)
            #expect(!names.contains("boot") && names.contains("windows-hives"), "\(names)")
        }
    }

    @Test(.requiresFUSE) func leftOutServiceFailsNamingIt() throws {
        let s = try #require(try ScenarioParsingTests.suite().scenarios.first { $0.name == "windows-hives" })
        let r = try Self.run(s, target: "hyperv-gen1") { $0.faults = "omit-driver:atapi" }
        let record = { (name: String) in r.records.first { $0.name == name }?.outcome }
        let summary = Self.summary(r)
        #expect(r.verdict == .fail, "\(summary)")
        #expect(record("reconfigure")?.verdict == .pass, "\(summary)")
        #expect(record("windows-hives")?.verdict == .fail, "\(summary)")
        let message = record("windows-hives")?.message ?? ""
        #expect(message.contains("Services\\atapi\\Start = 3"), "\(summary)")
        // Only that value is wrong: the BCD and MountedDevices edits still happened.
        #expect(!message.contains("BCD") && !message.contains("MountedDevices"), "\(summary)")
    }

    @Test(.requiresFUSE) func unreconfiguredHivesFailNamingTheOffsets() throws {
        var s = try #require(try ScenarioParsingTests.suite().scenarios.first { $0.name == "windows-hives" })
        s.reconfigure = false
        let r = try Self.run(s, target: "vmware-pvscsi") { _ in }
        let record = { (name: String) in r.records.first { $0.name == name }?.outcome }
        let summary = Self.summary(r)
        #expect(record("windows-hives")?.verdict == .fail, "\(summary)")
        let message = record("windows-hives")?.message ?? ""
        #expect(message.contains("partition offset (0x20) = 32256, expected 1048576"), "\(summary)")
        #expect(message.contains("MountedDevices"), "\(summary)")
        #expect(message.contains("Services\\pvscsi\\Start: missing"), "\(summary)")
    }
}
