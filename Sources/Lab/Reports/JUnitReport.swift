import Foundation

/// JUnit XML for CI systems: one test suite per scenario, one test case per cell × check.
/// Drift is a case that ran but could not be judged against the goldens: it is not a failure and
/// not a skip (a skip never ran); it carries `bootlab.verdict=drift` and its message in
/// `<system-out>`, and each suite counts drifted cases in a `drifted` attribute.
public enum JUnitReport {
    public static func render(_ report: LabReport) -> String {
        var out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        let all = report.cells.flatMap(\.records)
        out += "<testsuites name=\"bootlab-lab\" tests=\"\(all.count)\" failures=\"\(all.filter { $0.outcome.verdict == .fail }.count)\">\n"
        let byScenario = Dictionary(grouping: report.cells, by: \.cell.scenario)
        for scenario in byScenario.keys.sorted() {
            let cells = byScenario[scenario]!
            let records = cells.flatMap(\.records)
            let time = cells.map(\.seconds).reduce(0, +)
            out += "  <testsuite name=\"\(escape(scenario))\" tests=\"\(records.count)\" failures=\"\(records.filter { $0.outcome.verdict == .fail }.count)\" skipped=\"\(records.filter { $0.outcome.verdict == .skip }.count)\" drifted=\"\(records.filter { $0.outcome.verdict == .drift }.count)\" time=\"\(String(format: "%.3f", time))\">\n"
            for c in cells {
                for r in c.records {
                    out += "    <testcase classname=\"\(escape(scenario)).\(escape(c.cell.target))\" name=\"\(escape(r.name))\" time=\"\(String(format: "%.3f", r.seconds))\""
                    let detail = r.outcome.details.map { "\n" + $0 } ?? ""
                    switch r.outcome.verdict {
                    case .pass:
                        out += ">\n      <system-out>\(escape(r.outcome.message))</system-out>\n    </testcase>\n"
                    case .fail:
                        out += ">\n      <failure message=\"\(escape(r.outcome.message))\">\(escape(r.outcome.message + detail))</failure>\n    </testcase>\n"
                    case .skip:
                        out += ">\n      <skipped message=\"\(escape(r.outcome.message))\"/>\n    </testcase>\n"
                    case .drift:
                        out += ">\n      <properties><property name=\"bootlab.verdict\" value=\"drift\"/></properties>\n"
                        out += "      <system-out>\(escape("DRIFT: " + r.outcome.message + detail))</system-out>\n    </testcase>\n"
                    }
                }
            }
            out += "  </testsuite>\n"
        }
        out += "</testsuites>\n"
        return out
    }

    /// XML 1.0 text: escapes markup and drops control characters XML cannot carry.
    public static func escape(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars {
            switch u {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            case "\n", "\t", "\r": out.unicodeScalars.append(u)
            default:
                if u.value < 0x20 || (0xFFFE...0xFFFF).contains(u.value) { continue }
                out.unicodeScalars.append(u)
            }
        }
        return out
    }
}
