import Foundation

/// Builds (or takes from the cache) every source machine of the scenario and publishes its disk
/// and volume as artefacts.
public struct GenerateStep: LabStep {
    public let name = "generate"
    public init() {}

    public func run(in context: CellContext) throws -> StepOutcome {
        var parts: [String] = []
        for machine in context.scenario.machines {
            let g = try DiskGenerator.generate(machine, of: context.scenario, suite: context.suite)
            context.generated[machine.name] = g
            context.put(Artefact(role: ArtefactRole.sourceDisk, machine: machine.name,
                                 disk: .file(path: g.diskPath, format: "raw"), files: [g.diskPath]))
            context.put(Artefact(role: ArtefactRole.sourceVolume, machine: machine.name,
                                 disk: .file(path: g.volumePath, format: "raw"), files: [g.volumePath]))
            var note = "\(machine.name): disk \(g.diskDigest.prefix(12)) (\(g.kernelRelease), \(g.modules.files.count) modules)"
            if !g.modules.absent.isEmpty { note += ", absent: \(g.modules.absent.joined(separator: " "))" }
            parts.append(note)
        }
        return .pass(parts.joined(separator: "; "))
    }
}
