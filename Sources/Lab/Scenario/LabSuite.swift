import BlockCore
import Foundation

/// Every scenario and target under one directory (`Scenarios/` and `Scenarios/targets/`).
public struct LabSuite: Sendable {
    public var directory: URL
    public var scenarios: [Scenario]
    public var targets: [String: Target]

    public static func load(directory: URL) throws -> LabSuite {
        let targetDir = directory.appendingPathComponent("targets")
        var targets: [String: Target] = [:]
        for url in try yamlFiles(in: targetDir) {
            let target = try ScenarioLoader.parseTarget(yaml: try read(url), file: relative(url, directory))
            targets[target.name] = target
        }
        guard !targets.isEmpty else { throw LabError.file(path: targetDir.path, reason: "holds no target files") }
        var scenarios: [Scenario] = []
        for url in try yamlFiles(in: directory) {
            scenarios.append(try ScenarioLoader.parseScenario(yaml: try read(url), file: relative(url, directory), targets: targets))
        }
        return LabSuite(directory: directory, scenarios: scenarios, targets: targets)
    }

    /// The `Scenarios` directory: `$BOOTLAB_SCENARIOS`, else the data roots of `DataFiles` (the
    /// checkout this bootlab was built in, or its install prefix's `share/bootlab`), never the
    /// working directory.
    public static func defaultDirectory() throws -> DataFiles.Location {
        try DataFiles.locate(.scenarios)
    }

    public func scenario(named name: String) throws -> Scenario {
        guard let s = scenarios.first(where: { $0.name == name }) else {
            throw LabError.argument("scenario '\(name)'", reason: "unknown (known: \(scenarios.map(\.name).joined(separator: ", ")))")
        }
        return s
    }

    /// The modules a machine's initramfs loads: those of every target whose controller driver the
    /// machine carries (its storage modules, then its network adapter's), in target order, each
    /// module once. A machine that lived on one hypervisor carries that hypervisor's NIC driver.
    public func initramfsModules(for machine: SourceMachine, in scenario: Scenario) -> [String] {
        let drivers = machine.storageDrivers ?? scenario.targets.compactMap { targets[$0]?.controller.driver }
        var seen = Set<String>()
        var result: [String] = []
        let ordered = targets.values.sorted { $0.name < $1.name }
        for driver in drivers {
            for target in ordered where target.controller.driver == driver {
                for m in target.modules + (target.nic?.modules ?? []) where seen.insert(m).inserted { result.append(m) }
            }
        }
        return result
    }

    static func yamlFiles(in dir: URL) throws -> [URL] {
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        return names.filter { $0.hasSuffix(".yaml") }.sorted().map { dir.appendingPathComponent($0) }
    }

    static func read(_ url: URL) throws -> String {
        do { return try String(contentsOf: url, encoding: .utf8) } catch {
            throw LabError.file(path: url.path, reason: "cannot read it: \(error.localizedDescription)")
        }
    }

    static func relative(_ url: URL, _ base: URL) -> String {
        let b = base.deletingLastPathComponent().path
        return url.path.hasPrefix(b + "/") ? String(url.path.dropFirst(b.count + 1)) : url.path
    }
}
