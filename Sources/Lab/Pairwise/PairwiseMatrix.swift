import Foundation

/// The lab's pairwise matrix (`bootlab lab pairwise`, `bootlab lab run --pairwise`): every option
/// of the pipeline against every other, two at a time — backup (plain / zstd / zstd+AES / vault /
/// chain) × reconfigure (off / on) × front-end (FUSE / NBD) × backup kind (volume-only / whole
/// disk) × target — as the covering rows of `AllPairs`, each row one generated scenario with one
/// target (`pairwise-NN`). The scenarios are written as YAML and read by `ScenarioLoader`, so
/// they pass the same validation as the files under `Scenarios/`.
public struct PairwiseMatrix: Sendable {
    public struct Factor: Sendable, Equatable {
        public var name: String
        public var values: [String]
    }

    public static let backupValues = ["plain", "zstd", "zstd+aes", "vault", "chain"]
    public static let reconfigureValues = ["off", "on"]
    public static let frontendValues = ["fuse", "nbd"]
    public static let kindValues = ["volume-only", "whole-disk"]
    /// Every pairwise scenario's seed: the machines (one per target and driver set) are then
    /// generated once and shared through the cache by the rows that need them.
    public static let seed: UInt64 = 1500

    public var factors: [Factor]
    /// One value index per factor, per row.
    public var rows: [[Int]]
    public var scenarios: [Scenario]

    /// The matrix over the suite's BIOS targets (the generator makes MBR/BIOS machines only; a
    /// UEFI target joins when the generator can make a machine for it), in name order.
    public static func targets(of suite: LabSuite) -> [String] {
        suite.targets.values.filter { $0.firmware == "seabios" }.map(\.name).sorted()
    }

    public init(suite: LabSuite) throws {
        let targetNames = Self.targets(of: suite)
        factors = [
            Factor(name: "backup", values: Self.backupValues),
            Factor(name: "reconfigure", values: Self.reconfigureValues),
            Factor(name: "frontend", values: Self.frontendValues),
            Factor(name: "kind", values: Self.kindValues),
            Factor(name: "target", values: targetNames),
        ]
        rows = AllPairs.generate(sizes: factors.map(\.values.count))
        var out: [Scenario] = []
        for (index, row) in rows.enumerated() {
            let values = zip(factors, row).map { $0.values[$1] }
            let yaml = Self.yaml(number: index + 1, backup: values[0], reconfigure: values[1] == "on", frontend: values[2],
                                 kind: values[3], target: suite.targets[values[4]]!, suite: suite)
            out.append(try ScenarioLoader.parseScenario(yaml: yaml, file: "pairwise/\(Self.name(index + 1)).yaml", targets: suite.targets))
        }
        scenarios = out
    }

    public static func name(_ number: Int) -> String { String(format: "pairwise-%02d", number) }

    /// The option values a generated scenario stands for, read back from the scenario itself
    /// (not from the row), in factor order: what the coverage test checks.
    public static func values(of s: Scenario) -> [String] {
        let b = s.backup
        let backup: String
        if b.vault != nil { backup = "vault" }
        else if !b.incrementals.isEmpty { backup = "chain" }
        else if b.encryption == .aes256gcm && b.compression == .zstd { backup = "zstd+aes" }
        else if b.compression == .zstd { backup = "zstd" }
        else { backup = "plain" }
        return [backup, s.reconfigure ? "on" : "off", b.frontend.rawValue,
                b.kind == .disk ? "whole-disk" : "volume-only", s.targets.first ?? "?"]
    }

    /// The scenario of one row. The machine is an ext4 + extlinux guest on the generic kernel
    /// (every target's storage and network drivers exist there; the cloud kernel has no AHCI,
    /// tulip or e1000). Without reconfiguration its initramfs carries the target's drivers; with
    /// it, only a foreign controller's (AHCI, or virtio-blk for the AHCI target), so the row
    /// boots only if reconfiguration works.
    static func yaml(number: Int, backup: String, reconfigure: Bool, frontend: String, kind: String,
                     target: Target, suite: LabSuite) -> String {
        let foreign = target.controller.driver == "ahci" ? "virtio_blk" : "ahci"
        var lines = [
            "name: \(name(number))",
            "description: pairwise row \(number) — backup \(backup), reconfigure \(reconfigure ? "on" : "off"), \(frontend), \(kind), \(target.name)",
            "seed: \(seed)",
            "reconfigure: \(reconfigure)",
            "machine:",
            "  kernel: generic",
            "  filesystem: ext4",
            "  volume_size: 64M",
            "  marker: PAIRWISE-OK",
        ]
        if reconfigure { lines.append("  storage_drivers: [\(foreign)]") }
        lines += [
            "backup:",
            "  kind: \(kind == "whole-disk" ? "disk" : "volume-only")",
            "  frontend: \(frontend)",
        ]
        switch backup {
        case "zstd": lines.append("  compression: zstd")
        case "zstd+aes": lines += ["  compression: zstd", "  encryption: aes-256-gcm"]
        case "vault": lines.append("  vault: shared")
        case "chain": lines += ["  incrementals:", "    - write: [{path: /data/pairwise.bin, size: 128K}]"]
        default: break
        }
        lines.append("targets: [\(target.name)]")
        return lines.joined(separator: "\n") + "\n"
    }

    /// A plain table for `bootlab lab pairwise --list`.
    public func table() -> String {
        let headers = ["scenario"] + factors.map(\.name)
        var rowsText = [headers]
        for s in scenarios { rowsText.append([s.name] + Self.values(of: s)) }
        var widths = headers.map(\.count)
        for r in rowsText { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        return rowsText.map { r in
            r.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n") + "\n"
    }

    /// Pairs of option values no scenario covers, as `factor=value × factor=value` (empty when the
    /// matrix is complete), computed from the scenarios.
    public func missingPairs() -> [String] {
        let index = factors.map { f in Dictionary(uniqueKeysWithValues: f.values.enumerated().map { ($1, $0) }) }
        let rowsFromScenarios = scenarios.map { s in Self.values(of: s).enumerated().map { index[$0.offset][$0.element] ?? -1 } }
        let missing = AllPairs.allPairs(sizes: factors.map(\.values.count)).subtracting(AllPairs.covered(by: rowsFromScenarios))
        return missing.sorted().map {
            "\(factors[$0.first].name)=\(factors[$0.first].values[$0.firstValue]) × \(factors[$0.second].name)=\(factors[$0.second].values[$0.secondValue])"
        }
    }
}
