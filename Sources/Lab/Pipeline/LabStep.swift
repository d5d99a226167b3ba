import Foundation

/// The verdict of one step or validator in one cell (scenario × target).
public enum Verdict: String, Sendable, Codable, CaseIterable {
    case pass
    case fail
    case skip
    /// The output changed, but so did a recorded input tool version: not a regression.
    case drift
}

public struct StepOutcome: Sendable, Codable, Equatable {
    public var verdict: Verdict
    public var message: String
    /// Longer text for reports: a diff, a command line.
    public var details: String?
    /// Files worth linking from reports (label → path), e.g. `console` → a serial log.
    public var attachments: [String: String]

    public init(_ verdict: Verdict, _ message: String, details: String? = nil, attachments: [String: String] = [:]) {
        self.verdict = verdict
        self.message = message
        self.details = details
        self.attachments = attachments
    }

    public static func pass(_ m: String, details: String? = nil, attachments: [String: String] = [:]) -> StepOutcome { .init(.pass, m, details: details, attachments: attachments) }
    public static func fail(_ m: String, details: String? = nil, attachments: [String: String] = [:]) -> StepOutcome { .init(.fail, m, details: details, attachments: attachments) }
    public static func skip(_ m: String) -> StepOutcome { .init(.skip, m) }
}

/// A producing stage of a cell's pipeline (generate, back up, expose): it adds artefacts to the
/// context. If it fails, later steps and all validators of the cell are skipped.
public protocol LabStep: Sendable {
    var name: String { get }
    func run(in context: CellContext) throws -> StepOutcome
}

/// A check over the artefacts in the context (golden, qemu-img, libvhdi, boot). A failure is
/// recorded and the next validator still runs. A thrown error counts as a failure of the validator.
public protocol Validator: Sendable {
    var name: String { get }
    func validate(in context: CellContext) throws -> StepOutcome
}

/// Something a step made, by role. Roles are plain strings so new steps need no change here;
/// the well-known ones are in `ArtefactRole`.
public struct Artefact: Sendable, Codable, Equatable {
    public var role: String
    public var machine: String
    public var disk: DiskReference
    /// Files whose digests the golden validator records (empty for synthetic URIs).
    public var files: [String]
    /// Whether this artefact's bytes are expected to be identical run after run (golden digest).
    public var deterministic: Bool

    public init(role: String, machine: String, disk: DiskReference, files: [String], deterministic: Bool = true) {
        self.role = role
        self.machine = machine
        self.disk = disk
        self.files = files
        self.deterministic = deterministic
    }
}

public enum ArtefactRole {
    /// The generated source machine's whole disk (raw).
    public static let sourceDisk = "source-disk"
    /// The generated partition alone (raw): what a volume-only backup reads.
    public static let sourceVolume = "source-volume"
    /// What the boot validator boots for a machine; later steps (exposure) replace it.
    /// Defaults to the source disk when no step set one.
    public static let bootDisk = "boot-disk"
    /// The backup image (the last of a chain).
    public static let backup = "backup"
    /// The plugin file written by `expose`.
    public static let plugin = "plugin"
}
