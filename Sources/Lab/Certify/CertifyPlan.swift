import Foundation

/// What `bootlab certify TARGET.yaml` will run, decided before anything runs: which scenarios
/// apply to the target and how, and which do not and why.
///
/// Two kinds of cell:
/// - **recorded**: the scenario lists a target of the same name whose hardware profile equals the
///   certified file's (`Target.profile`: everything but where the file lives and how it boots).
///   The cell runs in the suite as it is, with its recorded expectation and golden files.
/// - **derived**: every other scenario that can say something about the target. It runs in a
///   certification suite holding only the certified target, so the generated guest's initramfs
///   carries exactly the target's own module list (never a neighbour's with the same driver) and
///   must boot; the golden validator does not run (goldens exist for recorded profiles only).
public struct CertifyPlan: Sendable {
    public enum Kind: String, Sendable, Codable { case recorded, derived }

    public struct Planned: Sendable {
        public var cell: Cell
        public var kind: Kind
    }

    /// A scenario that does not apply, or something that was not checked, and why.
    public struct Exclusion: Sendable, Codable, Equatable {
        public var what: String
        public var reason: String
        public init(what: String, reason: String) {
            self.what = what
            self.reason = reason
        }
    }

    public var target: Target
    /// The suite of recorded cells (the scenario directory as it is).
    public var suite: LabSuite
    /// The certification suite of derived cells (only the certified target; a derived
    /// `drivers.json` mapping it to its controller), nil when no cell is derived.
    public var derivedSuite: LabSuite?
    public var cells: [Planned]
    public var notApplicable: [Exclusion]
    /// Changes made to derived scenarios, said aloud (e.g. the drivers.json mapping).
    public var adaptations: [String]

    /// `only`: restrict to these scenario names (the CI subset); others are listed as not run.
    /// `derivedDirectory`: where the certification suite's `drivers.json` is written.
    /// `extended`: also the extended tier's scenarios (`lab run --extended`: real distributions,
    /// minutes per cell); otherwise they are listed as not run.
    public static func make(target: Target, suite: LabSuite, only: [String] = [], extended: Bool = false, derivedDirectory: URL) throws -> CertifyPlan {
        for name in only where !suite.scenarios.contains(where: { $0.name == name }) {
            throw LabError.argument("scenario '\(name)'", reason: "unknown (known: \(suite.scenarios.map(\.name).joined(separator: ", ")))")
        }
        let recordedProfile = suite.targets[target.name].map { $0.profile == target.profile } ?? false
        var cells: [Planned] = []
        var notApplicable: [Exclusion] = []
        var adaptations: [String] = []
        var derivedScenarios: [Scenario] = []
        let mapping = try DerivedDrivers.controller(for: target, suiteDirectory: suite.directory)

        for scenario in suite.scenarios {
            if !only.isEmpty && !only.contains(scenario.name) {
                notApplicable.append(.init(what: scenario.name, reason: "not selected (--scenario \(only.joined(separator: ", ")))"))
                continue
            }
            if scenario.isExtended && !extended && !only.contains(scenario.name) {
                notApplicable.append(.init(what: scenario.name, reason: "extended tier: not run without --extended (a real distribution, minutes per boot)"))
                continue
            }
            if target.bootRunner != nil && scenario.backup.frontend == .nbd {
                notApplicable.append(.init(what: scenario.name, reason: "serves its disk over NBD; the target's custom boot runner boots files (FUSE-exposed scenarios cover it)"))
                continue
            }
            if recordedProfile && scenario.targets.contains(target.name) {
                cells.append(.init(cell: Cell(scenario: scenario.name, target: target.name), kind: .recorded))
                continue
            }
            if let why = inapplicability(of: scenario, to: target, controller: mapping) {
                notApplicable.append(.init(what: scenario.name, reason: why))
                continue
            }
            var derived = scenario
            derived.targets = [target.name]
            derived.expectations = [:]
            derivedScenarios.append(derived)
            cells.append(.init(cell: Cell(scenario: scenario.name, target: target.name), kind: .derived))
        }
        if suite.targets[target.name] != nil && !recordedProfile {
            adaptations.append("the suite has a target named \(target.name) with another hardware profile: every cell is derived (no goldens), so the certified file's profile is what is tested")
        }
        var derivedSuite: LabSuite?
        if !derivedScenarios.isEmpty {
            try FileManager.default.createDirectory(at: derivedDirectory, withIntermediateDirectories: true)
            if let mapping, derivedScenarios.contains(where: \.reconfigure) {
                let note = try DerivedDrivers.write(target: target, controller: mapping, from: suite.directory, to: derivedDirectory)
                if let note { adaptations.append(note) }
            } else if FileManager.default.fileExists(atPath: suite.directory.appendingPathComponent("drivers.json").path) {
                let dest = derivedDirectory.appendingPathComponent("drivers.json")
                try? FileManager.default.removeItem(at: dest)
                try FileManager.default.copyItem(at: suite.directory.appendingPathComponent("drivers.json"), to: dest)
            }
            derivedSuite = LabSuite(directory: derivedDirectory, scenarios: derivedScenarios, targets: [target.name: target])
        }
        // Recorded cells boot the certified file's target (its boot runner, if any); its profile
        // equals the suite's, so the goldens still apply.
        var recordedSuite = suite
        if recordedProfile { recordedSuite.targets[target.name] = target }
        return CertifyPlan(target: target, suite: recordedSuite, derivedSuite: derivedSuite, cells: cells.sorted { $0.cell < $1.cell },
                           notApplicable: notApplicable, adaptations: adaptations)
    }

    /// Why a scenario cannot certify anything about this target, or nil if it can (as a derived
    /// cell that must boot).
    static func inapplicability(of scenario: Scenario, to target: Target, controller: String?) -> String? {
        for m in scenario.machines {
            // The format's refusal first: it is the same one `lab run` gives when the scenario
            // names the target, so both say why in the same words.
            if let why = ScenarioLoader.sectorSizeRefusal(machine: m, target: target) {
                return "machine \(m.name) has \(m.sectorSize)-byte sectors: \(why)"
            }
            // OVMF (4M, no CSM) runs no BIOS boot code, and SeaBIOS no EFI loader: such a cell
            // could only wait out its boot timeout.
            if m.isUEFI != (target.firmware == "ovmf") {
                return "machine \(m.name) boots through \(m.isUEFI ? "UEFI (GPT + ESP)" : "BIOS boot code"); the target's firmware is \(target.firmware)"
            }
            if let needed = target.requiresKernel, needed != m.kernel {
                return "machine \(m.name) runs the \(m.kernel.rawValue) kernel; the target requires the \(needed.rawValue) kernel"
            }
            if !scenario.reconfigure, let drivers = m.storageDrivers, !drivers.contains(target.controller.driver) {
                return "machine \(m.name) carries only the \(drivers.joined(separator: ", ")) driver\(drivers.count == 1 ? "" : "s") and the scenario does not reconfigure: on this target it could only show that a foreign guest does not boot"
            }
        }
        if scenario.reconfigure && controller == nil {
            return "reconfigures, but no controller in drivers.json loads \(target.controller.driver): the reconfiguration engine cannot target it (add a controller entry to Scenarios/drivers.json)"
        }
        return nil
    }
}

/// The reconfiguration engine knows targets by name through `drivers.json` (`targets.NAME.controller`).
/// A target that file does not name gets an entry in a copy: the controller whose Linux modules
/// include the target's controller driver (the one named like the target's controller kind first).
enum DerivedDrivers {
    static func load(_ dir: URL) throws -> [String: Any]? {
        let url = dir.appendingPathComponent("drivers.json")
        guard let data = try? Data(contentsOf: url) else { return nil }
        guard let top = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw LabError.file(path: url.path, reason: "not a JSON object")
        }
        return top
    }

    static func controller(for target: Target, suiteDirectory: URL) throws -> String? {
        guard let top = try load(suiteDirectory) else { return nil }
        if let t = (top["targets"] as? [String: Any])?[target.name] as? [String: Any], let c = t["controller"] as? String {
            let modules = ((top["controllers"] as? [String: Any])?[c] as? [String: Any])?["linuxModules"] as? [String] ?? []
            if modules.contains(target.controller.driver) { return c }
        }
        let controllers = (top["controllers"] as? [String: Any]) ?? [:]
        let candidates = controllers.keys.sorted().filter { key in
            ((controllers[key] as? [String: Any])?["linuxModules"] as? [String] ?? []).contains(target.controller.driver)
        }
        return candidates.first { $0 == target.controller.kind } ?? candidates.first
    }

    /// Writes the copy; returns a sentence for the certificate when it had to add or change the
    /// target's entry.
    static func write(target: Target, controller: String, from source: URL, to dest: URL) throws -> String? {
        guard var top = try load(source) else { return nil }
        var targets = (top["targets"] as? [String: Any]) ?? [:]
        let existing = (targets[target.name] as? [String: Any])?["controller"] as? String
        var entry = (targets[target.name] as? [String: Any]) ?? [:]
        entry["controller"] = controller
        targets[target.name] = entry
        top["targets"] = targets
        let data = try JSONSerialization.data(withJSONObject: top, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: dest.appendingPathComponent("drivers.json"))
        if existing == controller { return nil }
        return "drivers.json names no controller for \(target.name)\(existing.map { " that loads \(target.controller.driver) (it says \($0))" } ?? ""): the certification copy maps it to controller '\(controller)', whose modules include \(target.controller.driver)"
    }
}
