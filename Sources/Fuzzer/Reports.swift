import Foundation

public enum Reports {
    public static func writeJSON<T: Encodable>(_ value: T, to path: String) throws(FuzzError) {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        do { try FileSystem.write([UInt8](try enc.encode(value)) + [10], to: path) }
        catch let e as FuzzError { throw e }
        catch { throw .file(path, reason: "cannot encode: \(error)") }
    }

    public static func json<T: Encodable>(_ value: T) -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return (try? String(decoding: enc.encode(value), as: UTF8.self)) ?? "{}"
    }

    static func xml(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    /// JUnit XML: one test case for the campaign, one failing test case per finding.
    public static func junit(_ r: CampaignResult) -> String {
        var s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        s += "<testsuite name=\"bootlab fuzz \(r.format)\" tests=\"\(1 + r.findings.count)\" failures=\"\(r.findings.count)\" time=\"\(String(format: "%.3f", r.seconds))\">\n"
        s += "  <testcase classname=\"fuzz.\(r.format)\" name=\"campaign (\(r.runs) runs, seed \(r.seed), \(r.mode.rawValue))\"/>\n"
        for f in r.findings {
            s += "  <testcase classname=\"fuzz.\(r.format)\" name=\"\(xml(f.verdict.rawValue)) \(xml(f.signature))\">\n"
            s += "    <failure message=\"\(xml(f.outcome))\">\(xml("run \(f.run); repro: \(f.repro)\n\(f.trace.joined(separator: "\n"))\n\(f.stderrTail)"))</failure>\n"
            s += "  </testcase>\n"
        }
        return s + "</testsuite>\n"
    }

    /// The one-line reproduction command.
    public static func repro(target: TargetSpec, format: String, input: String) -> String {
        switch target {
        case .inProcess: return "bootlab check -f \(format) \(quote(input))"
        case .command(let argv):
            if let a = Executor.substitute(argv, path: input) { return a.map(quote).joined(separator: " ") }
            return argv.map(quote).joined(separator: " ") + " < " + quote(input)
        }
    }

    static func quote(_ s: String) -> String {
        s.allSatisfy { $0.isLetter || $0.isNumber || "-_./=:@,+".contains($0) } && !s.isEmpty ? s : "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// FNV-1a, for stable finding directory names.
    public static func hash(_ s: String) -> UInt32 {
        var h: UInt32 = 2166136261
        for b in s.utf8 { h = (h ^ UInt32(b)) &* 16777619 }
        return h
    }

    /// The human summary printed at the end.
    public static func summary(_ r: CampaignResult) -> String {
        var s = String(format: "bootlab fuzz %@ (%@, seed %llu): %d runs in %.1f s (%.0f execs/s), %d seeds, corpus %d", r.format, r.mode.rawValue, r.seed, r.runs, r.seconds, r.execsPerSecond, r.seeds, r.corpus)
        if let e = r.edges { s += ", edges \(e)" }
        s += "\nmutation kinds: " + r.mutationKinds.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        s += "\noutcomes: " + r.outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        s += "\nfindings: \(r.findings.count)"
        if let f = r.firstFindingAfterRuns { s += " (first after \(f) runs)" }
        for f in r.findings {
            s += "\n  \(f.verdict.rawValue): \(f.signature) — run \(f.run), \(f.originalSize) -> \(f.minimizedSize) bytes; repro: \(f.repro)"
        }
        return s
    }
}
