import Foundation

extension Certificate {
    /// Writes `certificate.json`, `certificate.html` (self-contained: styles inline, console logs
    /// inlined, no external asset) and `junit.xml` into `directory`, copying console logs into
    /// `logs/`. Returns the HTML file.
    @discardableResult
    public func write(to directory: URL) throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        let logs = directory.appendingPathComponent("logs")
        try fm.createDirectory(at: logs, withIntermediateDirectories: true)
        var copy = self
        for c in copy.cells.indices {
            for r in copy.cells[c].records.indices {
                for (label, path) in copy.cells[c].records[r].outcome.attachments where fm.fileExists(atPath: path) {
                    let cell = copy.cells[c].cell
                    let safeLabel = label.replacingOccurrences(of: " ", with: "-").replacingOccurrences(of: "(", with: "").replacingOccurrences(of: ")", with: "")
                    let name = "\(cell.scenario).\(cell.target).\(copy.cells[c].records[r].name.replacingOccurrences(of: ":", with: "-")).\(safeLabel).log"
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
        try encoder.encode(copy).write(to: directory.appendingPathComponent("certificate.json"))
        try Data(copy.junit().utf8).write(to: directory.appendingPathComponent("junit.xml"))
        let html = directory.appendingPathComponent("certificate.html")
        try Data(copy.html(base: directory).utf8).write(to: html)
        return html
    }

    /// JUnit: the cells' checks (as `lab run` reports them), then one suite for what was not
    /// covered (skipped cases carrying the reason) and one case for the verdict itself.
    public func junit() -> String {
        var lab = JUnitReport.render(LabReport(cells: cells.map { CellResult(cell: $0.cell, expectation: $0.expectation, records: $0.records, seconds: $0.seconds) },
                                               shard: nil, tool: tool))
        let e = JUnitReport.escape
        var extra = "  <testsuite name=\"certify.\(e(target.name))\" tests=\"\(1 + notApplicable.count + notCovered.count)\" failures=\"\(certified ? 0 : 1)\" skipped=\"\(notApplicable.count + notCovered.count)\">\n"
        extra += "    <testcase classname=\"certify.\(e(target.name))\" name=\"certificate\""
        extra += certified ? ">\n      <system-out>\(e(verdict))</system-out>\n    </testcase>\n"
                           : ">\n      <failure message=\"\(e(verdict))\">\(e(failures.map { "\($0.cell) \($0.check): \($0.message)" }.joined(separator: "\n")))</failure>\n    </testcase>\n"
        for x in notApplicable {
            extra += "    <testcase classname=\"certify.\(e(target.name)).not-applicable\" name=\"\(e(x.what))\">\n      <skipped message=\"\(e(x.reason))\"/>\n    </testcase>\n"
        }
        for x in notCovered {
            extra += "    <testcase classname=\"certify.\(e(target.name)).not-covered\" name=\"\(e(x.what))\">\n      <skipped message=\"\(e(x.reason))\"/>\n    </testcase>\n"
        }
        extra += "  </testsuite>\n"
        if let end = lab.range(of: "</testsuites>", options: .backwards) { lab.insert(contentsOf: extra, at: end.lowerBound) }
        return lab.replacingOccurrences(of: "<testsuites name=\"bootlab-lab\"", with: "<testsuites name=\"bootlab-certify\"")
    }

    public func html(base: URL) -> String {
        let e = JUnitReport.escape
        var h = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>BootLab certificate: \(e(target.name))</title>
        <style>
        body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:80em}
        table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
        .pass{background:#d9f2d9}.fail{background:#f7d4d4}.drift{background:#fbefc5}.skip{background:#eee}
        .banner{padding:1em;font-size:18px;font-weight:600;border-radius:4px}
        pre{background:#f6f6f6;padding:.6em;overflow:auto;max-height:30em;font-size:12px}
        details{margin:.3em 0 1em 0}summary{cursor:pointer}code{font-size:12px}
        </style></head><body>
        <h1>BootLab certificate: \(e(target.name))</h1>
        <div id="verdict" class="banner \(certified ? "pass" : "fail")">\(e(verdict))</div>

        """
        h += "<h2>Target profile</h2>\n<table id=\"profile\">\n"
        let rows: [(String, String)] = [
            ("name", target.name), ("file", target.file), ("SHA-256", target.digest), ("description", target.description),
            ("native format", target.nativeFormat), ("machine", target.machine), ("firmware", target.firmware),
            ("controller", target.controller), ("modules", target.modules.joined(separator: " ")),
            ("requires kernel", target.requiresKernel ?? "any"), ("boot runner", target.bootRunner),
            ("recorded in the suite", target.recordedInSuite ? "yes: recorded cells are judged against the goldens too" : "no: every cell is derived"),
            ("boots per cell", String(bootsPerCell)), ("tool", tool),
        ]
        for (k, v) in rows { h += "<tr><th>\(e(k))</th><td><code>\(e(v))</code></td></tr>\n" }
        h += "</table>\n<h2>Cells</h2>\n<p>\(["pass", "fail", "drift", "skip", "flaky", "not-applicable"].map { "\(summary[$0] ?? 0) \($0)" }.joined(separator: ", ")).</p>\n"
        h += "<table id=\"cells\"><tr><th>cell</th><th>kind</th><th>verdict</th><th>expectation</th><th>boots</th><th>time</th></tr>\n"
        for c in cells {
            let boots = c.boots.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.map(\.rawValue).joined(separator: " "))" }.joined(separator: "; ")
            h += "<tr class=\"\(c.verdict.rawValue)\"><td><a href=\"#\(anchor(c.cell))\">\(e(c.cell.id))</a></td><td>\(c.kind.rawValue)</td><td>\(TerminalReport.symbol(c.verdict))\(c.flaky ? " (flaky)" : "")</td><td>\(e(c.expectation))</td><td>\(e(boots))</td><td>\(String(format: "%.1f s", c.seconds))</td></tr>\n"
        }
        h += "</table>\n"
        if !failures.isEmpty {
            h += "<h2 id=\"failures\">Why it is not certified</h2>\n"
            for f in failures {
                h += "<div class=\"fail\" style=\"padding:.4em .8em;margin:.5em 0\"><strong>\(e(f.cell))</strong>, validator <strong>\(e(f.check))</strong>: \(e(f.message))"
                if let x = f.consoleExcerpt { h += "<pre>console (last lines):\n\(e(x))</pre>" }
                h += "</div>\n"
            }
        }
        h += "<h2 id=\"not-covered\">What was not covered</h2>\n<h3>Scenarios not applicable</h3>\n"
        h += list(notApplicable)
        h += "<h3>Checks not run</h3>\n" + list(notCovered)
        if !adaptations.isEmpty {
            h += "<h3>Adaptations</h3>\n<ul>\n" + adaptations.map { "<li>\(e($0))</li>\n" }.joined() + "</ul>\n"
        }
        h += "<h2 id=\"mutation\">Mutation sample</h2>\n<p>"
        if mutation.ran, let s = mutation.score {
            h += "score \(String(format: "%.0f%%", s * 100)) (\(mutation.caught)/\(mutation.total) caught)\(mutation.survivors.isEmpty ? "" : "; survivors: " + e(mutation.survivors.joined(separator: ", "))). "
        }
        h += "\(e(mutation.note))</p>\n"
        h += "<h2>Versions</h2>\n<table id=\"versions\">\n"
        for (k, v) in versions.sorted(by: { $0.key < $1.key }) { h += "<tr><th>\(e(k))</th><td><code>\(e(v))</code></td></tr>\n" }
        h += "</table>\n<h2>Cell details</h2>\n"
        for c in cells {
            h += "<h3 id=\"\(anchor(c.cell))\" class=\"\(c.verdict.rawValue)\">\(e(c.cell.id)) (\(c.kind.rawValue)): \(TerminalReport.symbol(c.verdict))</h3>\n"
            h += HTMLReport.records(c.records, base: base)
        }
        h += "</body></html>\n"
        return h
    }

    private func list(_ xs: [CertifyPlan.Exclusion]) -> String {
        if xs.isEmpty { return "<p>none</p>\n" }
        return "<ul>\n" + xs.map { "<li><strong>\(JUnitReport.escape($0.what))</strong>: \(JUnitReport.escape($0.reason))</li>\n" }.joined() + "</ul>\n"
    }

    private func anchor(_ c: Cell) -> String { "cell-\(c.scenario)-\(c.target)" }

    /// The terminal summary: verdict, cells, failures with their console excerpt, what was not covered.
    public func terminal() -> String {
        var s = "certificate for \(target.name) (\(target.file), sha256 \(target.digest.prefix(16))…)\n"
        for c in cells {
            let boots = c.boots.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.map(\.rawValue).joined(separator: ","))" }.joined(separator: "; ")
            s += "  \(TerminalReport.symbol(c.verdict)) \(c.cell.id.padding(toLength: 44, withPad: " ", startingAt: 0)) \(c.kind.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)) \(String(format: "%6.1f s", c.seconds))  \(boots)\(c.flaky ? " FLAKY" : "")\n"
        }
        for f in failures {
            s += "FAIL \(f.cell) \(f.check): \(f.message)\n"
            if let x = f.consoleExcerpt { s += x.split(separator: "\n").suffix(6).map { "    | \($0)\n" }.joined() }
        }
        for x in notApplicable { s += "not applicable: \(x.what): \(x.reason)\n" }
        for x in notCovered { s += "not covered: \(x.what): \(x.reason)\n" }
        for a in adaptations { s += "adaptation: \(a)\n" }
        s += "mutation: " + (mutation.ran ? "\(mutation.caught)/\(mutation.total) caught" : mutation.note) + "\n"
        s += verdict + "\n"
        return s
    }
}
