import BlockCore

/// One problem a checker found: which structure, where, what, and how bad.
public struct CheckFinding: Sendable, Codable, Equatable, CustomStringConvertible {
    public enum Severity: String, Sendable, Codable, Comparable {
        /// Not corruption, worth knowing (e.g. a log that still has to be replayed).
        case warning
        /// The file breaks the format's rules.
        case corruption

        public static func < (a: Severity, b: Severity) -> Bool { a == .warning && b == .corruption }
    }

    public var structure: String
    public var offset: UInt64
    public var message: String
    public var severity: Severity

    public init(structure: String, offset: UInt64, message: String, severity: Severity = .corruption) {
        self.structure = structure
        self.offset = offset
        self.message = message
        self.severity = severity
    }

    public init(_ e: FormatError, severity: Severity = .corruption) {
        self.init(structure: e.structure, offset: e.offset, message: e.reason, severity: severity)
    }

    public var description: String { "\(severity): \(structure) at 0x\(String(offset, radix: 16)): \(message)" }
}

/// What `check` found in a file. Exit codes follow qemu-img check: 0 clean, 2 corrupt (1 is for
/// a file that could not be checked at all, reported by throwing instead).
public struct CheckReport: Sendable, Codable, Equatable {
    public var path: String
    public var format: String
    public var findings: [CheckFinding]

    public init(path: String, format: String, findings: [CheckFinding] = []) {
        self.path = path
        self.format = format
        self.findings = findings
    }

    public var corruptions: [CheckFinding] { findings.filter { $0.severity == .corruption } }
    public var isCorrupt: Bool { !corruptions.isEmpty }
    public var exitCode: Int32 { isCorrupt ? 2 : 0 }

    /// Findings for `structure` (exact match).
    public func findings(for structure: String) -> [CheckFinding] { findings.filter { $0.structure == structure } }
}

/// Every format's check throws this when it cannot check the file at all — not a file of that
/// format, or a feature the check does not cover (`bootlab check` exits 1: could not check, as
/// opposed to 2: corrupt). Each check names it `<Format>Check.CannotCheck`.
public struct CannotCheckError: Error, CustomStringConvertible, Equatable {
    public let reason: String
    public init(reason: String) { self.reason = reason }
    public var description: String { reason }
}
