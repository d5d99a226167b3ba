import Foundation

/// The storage modules a source machine keeps on its root volume under
/// `/lib/modules/<release>/` (with a `modules.dep` covering them): every controller driver any
/// target of the suite or `drivers.json` names, every network adapter's, plus the file system's. A real machine has all
/// its kernel's modules on disk and only its initramfs is trimmed to its own controller; the
/// reconfiguration engine copies what a new target needs from here into the initramfs.
extension LabSuite {
    ///
    /// A scenario that targets a hypervisor with `hypervisorModules` in drivers.json (Hyper-V
    /// gen2's VMBus drivers) also gets those on its volumes, so reconfiguring for it can install
    /// them; only such scenarios' volumes change (every other cell's golden stays as it was).
    public func volumeModules(for machine: SourceMachine, in scenario: Scenario? = nil) -> [String] {
        var names: [String] = []
        for target in targets.values.sorted(by: { $0.name < $1.name }) { names += target.modules + (target.nic?.modules ?? []) }
        names += driverDataModules()
        if let scenario { names += hypervisorModules(for: scenario.targets) }
        names += DiskGenerator.filesystemModules(machine.filesystem)
        var seen = Set<String>()
        return names.filter { seen.insert($0).inserted }
    }

    /// `controllers.*.linuxModules` of `drivers.json` beside the scenarios (read as plain JSON:
    /// the lab does not link the reconfiguration engine), in controller-name order.
    func driverDataModules() -> [String] {
        let url = directory.appendingPathComponent("drivers.json")
        guard let data = try? Data(contentsOf: url),
              let top = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let controllers = top["controllers"] as? [String: Any] else { return [] }
        let nics = (top["nics"] as? [String: Any]) ?? [:]
        return controllers.keys.sorted().flatMap { ((controllers[$0] as? [String: Any])?["linuxModules"] as? [String]) ?? [] }
            + nics.keys.sorted().flatMap { ((nics[$0] as? [String: Any])?["linuxModules"] as? [String]) ?? [] }
    }
}

extension LabSuite {
    /// `targets.<name>.hypervisorModules` of drivers.json for these target names, in their order.
    public func hypervisorModules(for targetNames: [String]) -> [String] {
        let url = directory.appendingPathComponent("drivers.json")
        guard let data = try? Data(contentsOf: url),
              let top = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let targets = top["targets"] as? [String: Any] else { return [] }
        return targetNames.flatMap { ((targets[$0] as? [String: Any])?["hypervisorModules"] as? [String]) ?? [] }
    }
}

extension ModuleResolver {
    /// The kernel's `modules.dep` lines for `files` (their dependencies are among them: a
    /// resolution is closed under dependencies), in the kernel file's order.
    func dependencyLines(for files: [String], kernel: KernelTree) throws -> String {
        let wanted = Set(files)
        let dep = try String(contentsOf: kernel.modulesDirectory.appendingPathComponent("modules.dep"), encoding: .utf8)
        return dep.split(separator: "\n").filter { line in
            line.split(separator: ":", maxSplits: 1).first.map { wanted.contains(String($0)) } ?? false
        }.map { $0 + "\n" }.joined()
    }
}
