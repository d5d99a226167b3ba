import Foundation

/// One self-contained HTML file: the scenario × target matrix, then per-cell details with every
/// check's message, diff and the console log inlined (no external assets, opens offline).
public enum HTMLReport {
    public static func render(_ report: LabReport, base: URL) -> String {
        let e = JUnitReport.escape
        let scenarios = Array(Set(report.cells.map(\.cell.scenario))).sorted()
        let targets = Array(Set(report.cells.map(\.cell.target))).sorted()
        let byID = Dictionary(uniqueKeysWithValues: report.cells.map { ($0.cell.id, $0) })
        var h = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>BootLab lab report</title>
        <style>
        body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
        table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
        .pass{background:#d9f2d9}.fail{background:#f7d4d4}.drift{background:#fbefc5}.skip{background:#eee}
        td.cell a{color:inherit;text-decoration:none;font-weight:600}
        pre{background:#f6f6f6;padding:.6em;overflow:auto;max-height:30em;font-size:12px}
        details{margin:.3em 0 1em 0}summary{cursor:pointer}
        </style></head><body>
        <h1>BootLab lab report</h1>
        <p>\(report.cells.count) cells\(report.shard.map { ", shard \($0)" } ?? ""): \(["pass", "fail", "drift", "skip"].map { "\(report.summary[$0] ?? 0) \($0)" }.joined(separator: ", ")).</p>

        """
        let drifted = report.cells.filter { $0.verdict == .drift }
        if !drifted.isEmpty {
            h += "<div id=\"drift\" class=\"drift\" style=\"padding:.6em 1em\"><strong>\(drifted.count) drifted cell\(drifted.count == 1 ? "" : "s")</strong>: an external input changed their outputs, so the golden layer could not judge them (every other validator ran).<ul>\n"
            for c in drifted {
                for r in c.records where r.outcome.verdict == .drift {
                    h += "<li><a href=\"#\(anchor(c.cell))\">\(e(c.cell.id))</a>: \(e(r.outcome.message))</li>\n"
                }
            }
            h += "</ul></div>\n"
        }
        h += "<h2>Matrix</h2>\n<table id=\"matrix\"><tr><th>scenario \\ target</th>"
        for t in targets { h += "<th>\(e(t))</th>" }
        h += "</tr>\n"
        for s in scenarios {
            h += "<tr><th>\(e(s))</th>"
            for t in targets {
                if let c = byID["\(s)/\(t)"] {
                    h += "<td class=\"cell \(c.verdict.rawValue)\"><a href=\"#\(anchor(c.cell))\">\(TerminalReport.symbol(c.verdict))</a><br><small>\(e(c.expectation)) · \(String(format: "%.1f s", c.seconds))</small></td>"
                } else {
                    h += "<td>—</td>"
                }
            }
            h += "</tr>\n"
        }
        h += "</table>\n<h2>Cells</h2>\n"
        for c in report.cells {
            h += "<h3 id=\"\(anchor(c.cell))\" class=\"\(c.verdict.rawValue)\">\(e(c.cell.scenario)) × \(e(c.cell.target)): \(TerminalReport.symbol(c.verdict))</h3>\n"
            h += "<p>Expectation: \(e(c.expectation))</p>\n" + records(c.records, base: base)
        }
        h += "</body></html>\n"
        return h
    }

    /// One cell's checks as a table, then each check's details and attached logs (a failed
    /// check's logs open): the lab report and the certificate show a cell the same way.
    static func records(_ records: [StepRecord], base: URL) -> String {
        let e = JUnitReport.escape
        var h = "<table><tr><th>check</th><th>kind</th><th>result</th><th>time</th><th>message</th></tr>\n"
        for r in records {
            h += "<tr class=\"\(r.outcome.verdict.rawValue)\"><td>\(e(r.name))</td><td>\(r.kind.rawValue)</td><td>\(TerminalReport.symbol(r.outcome.verdict))</td><td>\(String(format: "%.1f s", r.seconds))</td><td>\(e(r.outcome.message))</td></tr>\n"
        }
        h += "</table>\n"
        for r in records {
            if let d = r.outcome.details, !d.isEmpty {
                h += "<details><summary>\(e(r.name)): details</summary><pre>\(e(d))</pre></details>\n"
            }
            for (label, path) in r.outcome.attachments.sorted(by: { $0.key < $1.key }) {
                let url = path.hasPrefix("/") ? URL(fileURLWithPath: path) : base.appendingPathComponent(path)
                let text = (try? Data(contentsOf: url)).map { String(decoding: $0, as: UTF8.self) } ?? "(\(path) unreadable)"
                h += "<details\(r.outcome.verdict == .fail ? " open" : "")><summary>\(e(r.name)): \(e(label)) log</summary><pre>\(e(stripANSI(text)))</pre></details>\n"
            }
        }
        return h
    }

    static func anchor(_ c: Cell) -> String { "cell-\(c.scenario)-\(c.target)" }

    /// SeaBIOS and syslinux paint the console with escape sequences; keep the text only.
    static func stripANSI(_ s: String) -> String {
        s.replacingOccurrences(of: "\u{1B}\\[[0-9;?]*[A-Za-z]", with: "", options: .regularExpression)
            .replacingOccurrences(of: "\u{1B}[()][A-Za-z0-9]", with: "", options: .regularExpression)
    }
}
