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

    /// The real Debian UEFI install (issue 14): a GPT machine like `bootloader: grub-efi`, with
    /// the distribution's boot timeout and the fstab-esp validator.
    @Test func debianUEFIScenarioLoads() throws {
        let suite = try ScenarioParsingTests.suite()
        let s = try suite.scenario(named: "debian-uefi")
        #expect(s.isExtended && s.reconfigure && s.backup.kind == .volumeOnly && s.backup.esp == .synthesize)
        let m = s.machines[0]
        #expect(m.os == .debianUEFI && m.bootloader == .grubEFI && m.isUEFI && m.rootPartitionNumber == 2)
        #expect(m.markerLine == "BOOTLAB-MARKER debian-uefi booted")
        #expect(Set(s.targets) == ["hyperv-gen2", "kvm-uefi"])
        for target in ["hyperv-gen2", "kvm-uefi"] {
            let names = Pipeline.standard(for: s, target: suite.targets[target]!).validators.map(\.name)
            #expect(names.contains("boot") && names.contains("gpt-esp") && names.contains("fstab-esp") && !names.contains("nic"), "\(target): \(names)")
        }
        // Only Debian UEFI machines get the fstab check.
        let tiny = try suite.scenario(named: "uefi-esp-synthesized")
        #expect(!Pipeline.standard(for: tiny, target: suite.targets["kvm-uefi"]!).validators.map(\.name).contains("fstab-esp"))
    }

    @Test func debianUEFIMachineRules() throws {
        let targets = try ScenarioParsingTests.suite().targets
        func parse(_ machine: String) throws -> Scenario {
            try ScenarioLoader.parseScenario(yaml: "name: x\nseed: 1\nmachine:\n" + machine + "targets: [kvm-uefi]\n", file: "x.yaml", targets: targets)
        }
        let ok = "  os: debian-uefi\n  kernel: cloud\n  filesystem: ext4\n  volume_size: 512M\n  partition_start: 133120\n  marker: debian-uefi\n"
        #expect(try parse(ok).machines[0].bootloader == .grubEFI)
        #expect(try parse(ok + "  bootloader: grub-efi\n").machines[0].os == .debianUEFI)
        for bad in [ok.replacingOccurrences(of: "ext4", with: "fat32"), ok.replacingOccurrences(of: "512M", with: "64M"),
                    ok.replacingOccurrences(of: "cloud", with: "generic"), ok.replacingOccurrences(of: "marker: debian-uefi", with: "marker: debian-grub"),
                    ok.replacingOccurrences(of: "133120", with: "2048"),
                    ok + "  storage_drivers: [virtio_blk]\n", ok + "  bootloader: grub\n"] {
            #expect(throws: ScenarioError.self, "\(bad)") { try parse(bad) }
        }
    }

    /// The fstab-esp validator's reading of fstab: the one non-comment /boot/efi line, vfat.
    @Test func fstabESPEntry() {
        let good = "UUID=b0071ab0-6e1b-4d2e-9a5c-0000000e1f12 / ext4 errors=remount-ro 0 1\nUUID=1A2B-3C4D\t/boot/efi  vfat umask=0077 0 1\n"
        #expect(FstabESPValidator.espEntry(in: good) == .success("UUID=1A2B-3C4D"))
        #expect(FstabESPValidator.espEntry(in: "# UUID=0000-0000 /boot/efi vfat 0 1\n" + good) == .success("UUID=1A2B-3C4D"))
        #expect(FstabESPValidator.espEntry(in: "UUID=x / ext4 defaults 0 1\n") == .failure(.none))
        #expect(FstabESPValidator.espEntry(in: good + "/dev/sda1 /boot/efi vfat defaults 0 2\n") == .failure(.several(2)))
        #expect(FstabESPValidator.espEntry(in: "UUID=1A2B-3C4D /boot/efi ext4 defaults 0 2\n") == .failure(.notVFAT("ext4")))
    }
}
