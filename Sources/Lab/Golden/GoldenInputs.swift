import Exposure
import Foundation

/// `inputs.json` beside a cell's goldens: what its recorded outputs were made from, in two tiers.
/// - Each generated machine: the generator's inputs (its recipe, the machine spec, and the files
///   it read from Debian's packages, by digest) and the digests of the disk and volume it made.
/// - The pipeline (backup, exposure, reconfiguration): the generated disks above, the scenario and
///   target definitions, the driver data when the cell reconfigures, and the files it reads from
///   outside the repository (mbr.bin for a synthesized MBR, libzstd and Crypto++ for the backup).
/// When outputs differ from the goldens, `explain` decides whether that is a regression (same
/// inputs), input drift (an external input changed, named) or stale goldens (the repository's own
/// inputs changed without re-recording). Package version strings decide nothing on their own.
public struct GoldenInputs: Sendable, Codable, Equatable {
    public struct Machine: Sendable, Codable, Equatable {
        public var generator: GeneratorInputs
        public var disk: String
        public var volume: String
    }

    public struct Pipeline: Sendable, Codable, Equatable {
        /// SHA-256 of the scenario's and the target's canonical JSON (their file paths left out).
        public var scenario: String
        public var target: String
        /// SHA-256 of `drivers.json`, for cells that reconfigure (others do not read it).
        public var drivers: String?
        public var external: ExternalInputs
    }

    public var machines: [String: Machine]
    public var pipeline: Pipeline

    /// Why outputs differ from the goldens, judged from the inputs alone.
    public enum Explanation: Sendable, Equatable {
        /// Every input as recorded: different outputs are a regression of the pipeline.
        case sameInputs
        /// The repository's own inputs changed (scenario, target, driver data, generator recipe or
        /// machine spec): the goldens must be re-recorded with the change.
        case stale([String])
        /// A generated disk changed while every external input it read is unchanged.
        case generatorRegression([String])
        /// An external input changed (named), and with it the outputs.
        case drift([String])
    }

    public func explain(changeFrom recorded: GoldenInputs) -> Explanation {
        var stale: [String] = [], regressions: [String] = [], drift: [String] = []
        for name in Set(machines.keys).union(recorded.machines.keys).sorted() {
            guard let now = machines[name], let then = recorded.machines[name] else {
                stale.append("machine \(name) \(machines[name] == nil ? "removed" : "added")")
                continue
            }
            var own: [String] = []
            if now.generator.recipe != then.generator.recipe {
                own.append("machine \(name): generator recipe \(then.generator.recipe) → \(now.generator.recipe)")
            }
            if now.generator.spec != then.generator.spec {
                own.append("machine \(name): machine spec (scenario machine, seed or module sets) changed")
            }
            stale += own
            guard own.isEmpty, now.disk != then.disk || now.volume != then.volume else { continue }
            let changed = now.generator.external.changes(from: then.generator.external)
            let what = now.disk != then.disk ? "disk sha256 \(ExternalInputs.short(then.disk)) → \(ExternalInputs.short(now.disk))"
                                             : "volume sha256 \(ExternalInputs.short(then.volume)) → \(ExternalInputs.short(now.volume))"
            if changed.isEmpty {
                regressions.append("machine \(name): generated \(what) with every external input unchanged")
            } else {
                drift.append("machine \(name): generated \(what) with \(changed.joined(separator: ", "))")
            }
        }
        if pipeline.scenario != recorded.pipeline.scenario { stale.append("scenario definition changed") }
        if pipeline.target != recorded.pipeline.target { stale.append("target profile changed") }
        if pipeline.drivers != recorded.pipeline.drivers { stale.append("driver data (drivers.json) changed") }
        let external = pipeline.external.changes(from: recorded.pipeline.external)
        if !external.isEmpty { drift.append("pipeline input \(external.joined(separator: ", "))") }
        if !stale.isEmpty { return .stale(stale) }
        if !regressions.isEmpty { return .generatorRegression(regressions) }
        if !drift.isEmpty { return .drift(drift) }
        return .sameInputs
    }

    /// The inputs of the cell as it ran.
    public static func current(_ context: CellContext) throws -> GoldenInputs {
        var machines: [String: Machine] = [:]
        for (name, g) in context.generated {
            machines[name] = Machine(generator: g.inputs, disk: g.diskDigest, volume: g.volumeDigest)
        }
        var scenario = context.scenario
        scenario.file = ""
        // The hardware profile: where the file lives and how it is booted (a custom runner)
        // change nothing the goldens record.
        let target = context.target.profile
        var external = ExternalInputs()
        if scenario.backup.kind == .volumeOnly {
            try external.addFile("syslinux mbr.bin", URL(fileURLWithPath: DiskComposer.defaultBootCodePath))
        }
        // Compressed bytes are libzstd's to decide (a new zstd may compress differently); AES-GCM
        // and scrypt are fixed functions, but their code is still what made the bytes.
        // A synthesized ESP's loader is the host's grub-mkimage's output (from the volume's modules).
        if scenario.backup.esp == .synthesize { try external.addTool("grub-mkimage") }
        if scenario.backup.compression == .zstd { try external.addLibraryPackage("libzstd1") }
        if scenario.backup.encryption != .none { try external.addLibraryPackage("libcrypto++8") }
        var drivers: String?
        if scenario.reconfigure {
            drivers = try Digest.file(context.suite.directory.appendingPathComponent("drivers.json"))
        }
        return GoldenInputs(machines: machines,
                            pipeline: Pipeline(scenario: try canonicalDigest(scenario), target: try canonicalDigest(target),
                                               drivers: drivers, external: external))
    }

    static func canonicalDigest(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Digest.string(String(decoding: try encoder.encode(value), as: UTF8.self))
    }
}
