import Foundation

/// The scenario × target × validator table printed at the end of a run.
public enum TerminalReport {
    public static func symbol(_ v: Verdict) -> String {
        switch v {
        case .pass: return "PASS"
        case .fail: return "FAIL"
        case .skip: return "skip"
        case .drift: return "DRIFT"
        }
    }

    /// The run's closing line, counted from the cells: `lab: 17 passed, 1 drifted, 0 failed, 0 skipped`.
    public static func summaryLine(_ report: LabReport) -> String {
        let s = report.summary
        return "lab: \(s["pass"] ?? 0) passed, \(s["drift"] ?? 0) drifted, \(s["fail"] ?? 0) failed, \(s["skip"] ?? 0) skipped"
    }

    public static func progressLine(done: Int, total: Int, result: CellResult) -> String {
        let failing = result.records.filter { $0.outcome.verdict == .fail || $0.outcome.verdict == .drift }
        let note = failing.first.map { " — \($0.name): \($0.outcome.message)" } ?? ""
        return String(format: "[%d/%d] %@ %@ (%.1f s)%@", done, total, symbol(result.verdict), result.cell.id, result.seconds, note)
    }

    public static func render(_ report: LabReport) -> String {
        var rows: [[String]] = [["scenario", "target", "check", "result", "time", "message"]]
        for c in report.cells {
            for (i, r) in c.records.enumerated() {
                rows.append([i == 0 ? c.cell.scenario : "", i == 0 ? c.cell.target : "", r.name, symbol(r.outcome.verdict),
                             String(format: "%.1fs", r.seconds), String(r.outcome.message.prefix(90))])
            }
        }
        let widths = (0..<5).map { col in rows.map { $0[col].count }.max() ?? 0 }
        var out = ""
        for (i, row) in rows.enumerated() {
            let cols = (0..<5).map { row[$0].padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
            out += (cols + [row[5]]).joined(separator: "  ") + "\n"
            if i == 0 { out += widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ") + "  -------\n" }
        }
        let drifted = report.cells.filter { $0.verdict == .drift }
        if !drifted.isEmpty {
            out += "\nInput drift (the golden layer could not judge these cells; every other validator ran):\n"
            for c in drifted {
                for r in c.records where r.outcome.verdict == .drift { out += "  DRIFT \(c.cell.id) \(r.name): \(r.outcome.message)\n" }
            }
        }
        out += "\n" + summaryLine(report) + "\n"
        return out
    }
}
