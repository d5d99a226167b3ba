import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
@testable import Lab

struct ReportTests {
    static func sample(consoleLog: String) -> LabReport {
        let pass = CellResult(cell: Cell(scenario: "alpha", target: "kvm-virtio"), expectation: "boots", records: [
            StepRecord(name: "generate", kind: .step, outcome: .pass("made <disk> & co"), seconds: 1.5),
            StepRecord(name: "golden", kind: .validator, outcome: .init(.drift, "input drift: e2fsprogs 1 → 2", details: "--- golden\n+++ actual"), seconds: 0.1),
            StepRecord(name: "boot", kind: .validator, outcome: .pass("marker seen", attachments: ["console": consoleLog]), seconds: 4.2),
        ], seconds: 5.8)
        let fail = CellResult(cell: Cell(scenario: "beta", target: "hyperv-gen1"), expectation: "must not boot (root device not found)", records: [
            StepRecord(name: "boot", kind: .validator, outcome: .fail("booted \"but\" must not boot\u{1B}[0m"), seconds: 3),
        ], seconds: 3)
        return LabReport(cells: [pass, fail], shard: nil, tool: "test")
    }

    @Test func reportFilesAreProducedAndWellFormed() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-report-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let log = dir.appendingPathComponent("console.txt")
        try Data("\u{1B}[2JSeaBIOS\r\nBOOTLAB-MARKER: X <ok>\r\n".utf8).write(to: log)
        let report = Self.sample(consoleLog: log.path)
        #expect(report.hasRegression)
        #expect(report.summary["drift"] == 1 && report.summary["fail"] == 1 && report.summary["pass"] == 0)
        #expect(report.cells[0].verdict == .drift)
        let out = dir.appendingPathComponent("out")
        let html = try report.write(to: out)

        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("report.json"))) as? [String: Any]
        let cells = try #require(json?["cells"] as? [[String: Any]])
        #expect(cells.count == 2)
        let decoded = try JSONDecoder().decode(LabReport.self, from: Data(contentsOf: out.appendingPathComponent("report.json")))
        #expect(decoded.cells[1].records[0].outcome.verdict == .fail)
        #expect(decoded.cells[0].records[2].outcome.attachments["console"] == "logs/alpha.kvm-virtio.boot.console.log")
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("logs/alpha.kvm-virtio.boot.console.log").path))

        let parser = XMLParser(data: try Data(contentsOf: out.appendingPathComponent("junit.xml")))
        #expect(parser.parse(), "junit.xml is not well-formed: \(String(describing: parser.parserError))")
        let junit = try String(contentsOf: out.appendingPathComponent("junit.xml"), encoding: .utf8)
        #expect(junit.contains("<failure message=\"booted &quot;but&quot; must not boot"))
        // Drift is loud and is neither a failure nor a skip.
        #expect(junit.contains("<property name=\"bootlab.verdict\" value=\"drift\"/>"))
        #expect(junit.contains("<system-out>DRIFT: input drift: e2fsprogs 1 → 2"))
        #expect(junit.contains("drifted=\"1\""))
        #expect(!junit.contains("<skipped"))

        let page = try String(contentsOf: html, encoding: .utf8)
        #expect(page.contains("<table id=\"matrix\">"))
        #expect(page.contains("<div id=\"drift\""), "drifted cells listed above the matrix")
        #expect(page.contains("input drift: e2fsprogs 1 → 2"))
        #expect(page.contains("href=\"#cell-alpha-kvm-virtio\""))
        #expect(page.contains("BOOTLAB-MARKER: X &lt;ok&gt;"), "console log inlined and escaped")
        #expect(!page.contains("\u{1B}"))
        #expect(!page.contains("<script") && !page.contains("src=\"http"), "self-contained")

        let table = TerminalReport.render(report)
        #expect(table.contains("alpha") && table.contains("DRIFT") && table.contains("FAIL"))
        #expect(table.contains("DRIFT alpha/kvm-virtio golden: input drift: e2fsprogs 1 → 2"))
        #expect(table.hasSuffix("lab: 0 passed, 1 drifted, 1 failed, 0 skipped\n"))
    }
}
