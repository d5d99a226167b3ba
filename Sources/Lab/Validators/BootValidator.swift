import Foundation

/// Boots a machine's boot disk on the cell's target and holds the result to the scenario's
/// expectation: `boots` needs the marker; `must_not_boot` needs a failed boot whose console
/// matches the stated reason (another failure is a failure of the check, not a pass).
public struct BootValidator: Validator {
    public let machine: String
    public let name: String
    /// The least boot timeout for a real distribution (`os: debian-grub`, `debian-uefi`), in seconds.
    public static let distributionTimeout: Double = 240

    public init(machine: String, named name: String? = nil) {
        self.machine = machine
        self.name = name ?? (machine == "main" ? "boot" : "boot:\(machine)")
    }

    public func validate(in context: CellContext) throws -> StepOutcome {
        guard let spec = context.scenario.machines.first(where: { $0.name == machine }) else {
            return .fail("scenario has no machine \(machine)")
        }
        guard let disk = context.bootDisk(machine: machine) else {
            return .fail("no boot disk for machine \(machine): no step produced one")
        }
        if case .notBooted(let reason) = context.scenario.expectation(for: context.target.name) {
            // The pipeline leaves this validator out of such cells; reaching here is a wiring error.
            return .fail("the scenario says this cell is not booted (\(reason)), yet a boot check ran")
        }
        let log = context.directory.appendingPathComponent("console-\(machine).log")
        // GRUB + systemd takes 15–19 s under TCG on a quiet machine (the tiny Linux 3–6 s).
        let timeout = spec.os?.isDebian == true ? max(context.options.bootTimeout, Self.distributionTimeout) : context.options.bootTimeout
        let result = try BootRunner.boot(disk: disk.disk, target: context.target, marker: spec.marker,
                                         consoleLog: log, timeout: timeout * BootRunner.timeoutScale(firmware: context.target.firmware),
                                         markerLine: spec.markerLine, sectorSize: spec.sectorSize)
        let attachments = ["console": result.consoleLogPath]
        let details = "disk: \(disk.disk.description)\ncommand: \(result.commandLine.joined(separator: " "))"
        let seconds = String(format: "%.1f s", result.seconds)
        let why = result.timedOut ? "timed out after \(seconds)" : (result.failureLine ?? "no marker, no reason on the console")
        switch context.scenario.expectation(for: context.target.name) {
        case .boots:
            if result.markerSeen { return .pass("marker seen after \(seconds)", details: details, attachments: attachments) }
            return .fail("did not boot: \(why)", details: details, attachments: attachments)
        case .mustNotBoot(let reason):
            if result.markerSeen {
                return .fail("booted (marker seen) but must not boot", details: details, attachments: attachments)
            }
            let console = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            let regex = try NSRegularExpression(pattern: reason, options: [.caseInsensitive])
            let lines = console.split(whereSeparator: \.isNewline).map(String.init)
            if let line = lines.first(where: { regex.firstMatch(in: $0, range: NSRange($0.startIndex..., in: $0)) != nil }) {
                return .pass("failed as expected: \(line.trimmingCharacters(in: .whitespaces))", details: details, attachments: attachments)
            }
            return .fail("did not boot, but not for the stated reason /\(reason)/: \(why)", details: details, attachments: attachments)
        case .notBooted:
            return .fail("unreachable: not-booted cells return before the boot")
        }
    }
}
