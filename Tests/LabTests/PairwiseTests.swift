import Foundation
import Testing
@testable import Lab

/// The pairwise matrix covers every pair of option values: checked by enumerating the pairs
/// independently of the generator and looking for each in the generated *scenarios* (their
/// backup, reconfigure, front-end, kind and target fields), not in the generator's rows.
struct PairwiseTests {
    @Test func everyPairOfOptionValuesAppearsInSomeCell() throws {
        let suite = try ScenarioParsingTests.suite()
        let matrix = try PairwiseMatrix(suite: suite)
        let targets = PairwiseMatrix.targets(of: suite)
        #expect(targets == ["azure-gen1", "hyperv-gen1", "kvm-virtio", "virtualbox-ahci", "vmware-pvscsi"])
        let factors: [[String]] = [["plain", "zstd", "zstd+aes", "vault", "chain"], ["off", "on"], ["fuse", "nbd"],
                                   ["volume-only", "whole-disk"], targets]
        func value(_ s: Scenario, _ f: Int) -> String {
            let b = s.backup
            switch f {
            case 0:
                if b.vault != nil { return "vault" }
                if !b.incrementals.isEmpty { return "chain" }
                if b.compression == .zstd { return b.encryption == .aes256gcm ? "zstd+aes" : "zstd" }
                return b.encryption == .none ? "plain" : "aes-only"
            case 1: return s.reconfigure ? "on" : "off"
            case 2: return b.frontend == .nbd ? "nbd" : "fuse"
            case 3: return b.kind == .disk ? "whole-disk" : "volume-only"
            default: return s.targets.count == 1 ? s.targets[0] : "several"
            }
        }
        var missing: [String] = []
        var pairs = 0
        for f in factors.indices {
            for g in factors.indices where g > f {
                for v in factors[f] {
                    for w in factors[g] {
                        pairs += 1
                        if !matrix.scenarios.contains(where: { value($0, f) == v && value($0, g) == w }) { missing.append("\(v) × \(w)") }
                    }
                }
            }
        }
        #expect(pairs == 97)
        #expect(missing.isEmpty, "pairs no cell covers: \(missing)")
        #expect(matrix.missingPairs().isEmpty)
        // Much smaller than the product (200), never smaller than the two largest factors' product.
        #expect(matrix.scenarios.count >= 25 && matrix.scenarios.count <= 30, "\(matrix.scenarios.count) cells")
        // Each cell is one scenario on one target, boots, and names itself pairwise-NN.
        for (i, s) in matrix.scenarios.enumerated() {
            #expect(s.name == String(format: "pairwise-%02d", i + 1))
            #expect(s.targets.count == 1 && s.expectation(for: s.targets[0]) == .boots)
            // Reconfigured rows start from a machine that lacks the target's controller driver.
            let drivers = suite.initramfsModules(for: s.machines[0], in: s)
            let targetDriver = suite.targets[s.targets[0]]!.controller.driver
            #expect(drivers.contains(targetDriver) != s.reconfigure, "\(s.name): \(drivers)")
        }
    }

    @Test func deterministic() throws {
        let suite = try ScenarioParsingTests.suite()
        let a = try PairwiseMatrix(suite: suite), b = try PairwiseMatrix(suite: suite)
        #expect(a.rows == b.rows && a.scenarios == b.scenarios)
        #expect(a.table() == b.table())
    }

    /// The generator itself on other factor shapes: always complete, never more rows than the
    /// full product, at least the product of the two largest factors.
    @Test func allPairsCoversOtherShapes() {
        for sizes in [[2, 2], [3, 3, 3], [2, 2, 2, 2, 2, 2, 2], [5, 1, 4], [7, 2, 3, 2, 6], [1], [3]] {
            let rows = AllPairs.generate(sizes: sizes)
            #expect(AllPairs.allPairs(sizes: sizes).subtracting(AllPairs.covered(by: rows)).isEmpty, "\(sizes)")
            #expect(rows.allSatisfy { r in r.count == sizes.count && zip(r, sizes).allSatisfy { $0 >= 0 && $0 < $1 } })
            let sorted = sizes.sorted(by: >)
            #expect(rows.count >= (sizes.count > 1 ? sorted[0] * sorted[1] : sorted[0]))
            #expect(rows.count <= sizes.reduce(1, *))
            #expect(rows == AllPairs.generate(sizes: sizes))
        }
        // A textbook case: 3 binary factors need exactly 4 rows.
        #expect(AllPairs.generate(sizes: [2, 2, 2]).count == 4)
    }
}

/// The real-distribution scenario's model: `os: debian-grub`, the extended tier, and the rules
/// that keep a Debian machine and a tiny one apart.
struct RealOSScenarioTests {
    @Test func debianGrubScenarioLoads() throws {
        let suite = try ScenarioParsingTests.suite()
        let s = try suite.scenario(named: "debian-grub")
        #expect(s.isExtended && s.reconfigure)
        #expect(s.machines[0].os == .debianGrub && s.machines[0].bootloader == .grub)
        #expect(s.machines[0].markerLine == "BOOTLAB-MARKER debian-grub booted")
        #expect(Set(s.targets) == ["hyperv-gen1", "vmware-pvscsi"])
        // No nic validator (the Debian units print no adapter lines); the boot validator is there.
        let names = Pipeline.standard(for: s, target: suite.targets["hyperv-gen1"]!).validators.map(\.name)
        #expect(names.contains("boot") && !names.contains("nic"))
        // Every default-tier tiny-Linux scenario keeps its digest: os and tier are absent from the
        // encoding unless set (windows-hives, default tier, sets os).
        for other in suite.scenarios where !other.isExtended && other.machines.allSatisfy({ $0.os == nil }) {
            let json = String(decoding: try JSONEncoder().encode(other), as: UTF8.self)
            #expect(!json.contains("\"tier\"") && !json.contains("\"os\""), "\(other.name)")
        }
    }

    @Test func debianMachineRules() throws {
        let targets = try ScenarioParsingTests.suite().targets
        func parse(_ machine: String) throws -> Scenario {
            try ScenarioLoader.parseScenario(yaml: "name: x\nseed: 1\nmachine:\n" + machine + "targets: [hyperv-gen1]\n", file: "x.yaml", targets: targets)
        }
        let ok = "  os: debian-grub\n  kernel: cloud\n  filesystem: ext4\n  volume_size: 512M\n  marker: debian-grub\n"
        #expect(try parse(ok).machines[0].os == .debianGrub)
        for bad in [ok.replacingOccurrences(of: "ext4", with: "fat32"), ok.replacingOccurrences(of: "512M", with: "64M"),
                    ok.replacingOccurrences(of: "cloud", with: "generic"), ok.replacingOccurrences(of: "marker: debian-grub", with: "marker: X"),
                    ok + "  storage_drivers: [ahci]\n", ok + "  bootloader: extlinux\n",
                    "  kernel: cloud\n  filesystem: ext4\n  bootloader: grub\n  volume_size: 64M\n  marker: X\n"] {
            #expect(throws: ScenarioError.self, "\(bad)") { try parse(bad) }
        }
    }
}
