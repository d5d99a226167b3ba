import BlockCore
import Exposure
import Foundation

/// Options every cell sees.
public struct RunOptions: Sendable {
    public var goldenDirectory: URL
    public var updateGolden: Bool
    public var bootTimeout: Double
    /// Where cells keep their work files (console logs, overlays).
    public var workDirectory: URL
    /// Deliberate corruption for fault tests (`--inject-fault` syntax, see `FaultPlan`): applied
    /// in-process by the expose step, passed to the front-end children as `--inject-fault`; nil in
    /// real runs.
    public var faults: String? = nil
    /// Hard bound on one cell, seconds (`lab run --cell-timeout`): past it the cell's children
    /// (QEMU, front-ends, tools) are stopped, its mounts and servers cleaned up, and it fails with
    /// "timeout after N s". Nil: no bound.
    public var cellTimeout: Double? = RunOptions.defaultCellTimeout
    /// Generous: the slowest cell measured (a reconfigured, encrypted vault chain booted twice)
    /// takes about 2 minutes on a loaded 2-core machine.
    public static let defaultCellTimeout: Double = 600

    public init(goldenDirectory: URL, updateGolden: Bool = false, bootTimeout: Double = BootRunner.defaultTimeout, workDirectory: URL) {
        self.goldenDirectory = goldenDirectory
        self.updateGolden = updateGolden
        self.bootTimeout = bootTimeout
        self.workDirectory = workDirectory
    }
}

/// The state of one cell (scenario × target) as its pipeline runs. Used by one worker thread at
/// a time; steps add artefacts, validators read them.
public final class CellContext: @unchecked Sendable {
    public let scenario: Scenario
    public let target: Target
    public let suite: LabSuite
    public let options: RunOptions
    /// This cell's private directory (`<work>/<scenario>/<target>/`).
    public let directory: URL
    public private(set) var artefacts: [Artefact] = []
    /// Generator output per machine name.
    public var generated: [String: GeneratedMachine] = [:]
    /// Backups made by the backup step, per machine (the last image of a chain).
    public var backups: [String: String] = [:]
    /// External sources of a user's backup tool (`backup.source`), per machine: the expose step
    /// exposes these instead of `.bli` backups.
    public var sources: [String: BackupSourceSpec] = [:]
    /// Plugin files written by the expose step, per machine.
    public var plugins: [String: String] = [:]
    /// The running front-end serving the exposed disks (set by the expose step).
    public var frontEnd: FrontEndProcess?
    /// `--update-golden`: what the golden validator would record, written by the runner only
    /// when every other validator of the cell passed.
    public var pendingGolden: PendingGolden?
    /// SHA-256 of every backup file (images and vault files) right after the backup step, by path.
    public var backupDigests: [String: String] = [:]
    /// Per machine: the source disk state the last backup holds (the generated disk, or the last
    /// change set's copy) and the files the change sets left on it.
    public var finalStates: [String: ChangeSetApplier.FinalState] = [:]
    /// Run once the cell's validators are done, last added first (unmount, stop servers) — or
    /// from the interrupt handler's thread when `lab run` is stopped, hence the lock.
    private var cleanups: [() -> Void] = []
    private let cleanupLock = NSLockish()

    public func addCleanup(_ body: @escaping () -> Void) { cleanupLock.withLock { cleanups.append(body) } }

    public func runCleanups() {
        while let c = cleanupLock.withLock({ cleanups.popLast() }) { c() }
    }

    public init(scenario: Scenario, target: Target, suite: LabSuite, options: RunOptions) {
        self.scenario = scenario
        self.target = target
        self.suite = suite
        self.options = options
        directory = options.workDirectory.appendingPathComponent(scenario.name).appendingPathComponent(target.name)
    }

    /// Adds or replaces (same role and machine) an artefact.
    public func put(_ artefact: Artefact) {
        artefacts.removeAll { $0.role == artefact.role && $0.machine == artefact.machine }
        artefacts.append(artefact)
    }

    public func artefact(_ role: String, machine: String) -> Artefact? {
        artefacts.first { $0.role == role && $0.machine == machine }
    }

    /// The disk the boot validator should boot for a machine.
    public func bootDisk(machine: String) -> Artefact? {
        artefact(ArtefactRole.bootDisk, machine: machine) ?? artefact(ArtefactRole.sourceDisk, machine: machine)
    }
}
