import Foundation

/// A boot validator run `boots` times on the same disk: the verdicts must agree. A cell whose
/// boots disagree is flaky and fails, whatever the majority says; each boot's console is kept.
/// The per-boot verdicts are in `details` as `boot verdicts: pass pass fail` (the certificate
/// reads them back for its flakiness table).
public struct RepeatedBootValidator: Validator {
    public let inner: any Validator
    public let boots: Int
    public var name: String { inner.name }

    public static let verdictsPrefix = "boot verdicts: "

    public init(_ inner: any Validator, boots: Int) {
        self.inner = inner
        self.boots = max(1, boots)
    }

    public func validate(in context: CellContext) throws -> StepOutcome {
        var outcomes: [StepOutcome] = []
        var attachments: [String: String] = [:]
        for i in 1...boots {
            let o: StepOutcome
            do { o = try inner.validate(in: context) } catch { o = .fail("error: \(error)") }
            for (label, path) in o.attachments {
                // Keep every boot's console: the next boot overwrites the file.
                let kept = boots == 1 ? path : path.replacingOccurrences(of: ".log", with: "") + "-boot\(i).log"
                if kept != path {
                    try? FileManager.default.removeItem(atPath: kept)
                    try? FileManager.default.copyItem(atPath: path, toPath: kept)
                }
                attachments[boots == 1 ? label : "\(label) (boot \(i))"] = kept
            }
            outcomes.append(o)
        }
        let verdicts = outcomes.map(\.verdict)
        let line = Self.verdictsPrefix + verdicts.map(\.rawValue).joined(separator: " ")
        let details = ([line] + outcomes.enumerated().map { "boot \($0.offset + 1): \($0.element.verdict.rawValue): \($0.element.message)" }
                       + (outcomes.first?.details.map { [$0] } ?? [])).joined(separator: "\n")
        // `console` names the log a reader needs: the first failing boot's (the others stay
        // attached as `console (boot N)`).
        if boots > 1, let i = outcomes.firstIndex(where: { $0.verdict == .fail }), let failing = attachments["console (boot \(i + 1))"] {
            attachments["console"] = failing
        }
        if Set(verdicts).count > 1 {
            let passes = verdicts.filter { $0 == .pass }.count
            let firstFail = outcomes.first { $0.verdict != .pass }?.message ?? ""
            return .fail("flaky: \(passes) of \(boots) boots passed (\(firstFail))", details: details, attachments: attachments)
        }
        let first = outcomes[0]
        let prefix = boots == 1 ? "" : "\(boots)/\(boots) boots agree: "
        return StepOutcome(first.verdict, prefix + first.message, details: details, attachments: attachments)
    }

    /// The per-boot verdicts a record carries, or nil if it is not a repeated boot's record.
    public static func verdicts(in record: StepRecord) -> [Verdict]? {
        guard let d = record.outcome.details,
              let line = d.split(separator: "\n").first(where: { $0.hasPrefix(verdictsPrefix) }) else { return nil }
        return line.dropFirst(verdictsPrefix.count).split(separator: " ").compactMap { Verdict(rawValue: String($0)) }
    }
}
