import Foundation
import Testing
@testable import Lab

/// Scenario and target files: the shipped suite loads, and bad files are rejected with the file,
/// the key and the reason.
struct ScenarioParsingTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static func suite() throws -> LabSuite { try LabSuite.load(directory: repo.appendingPathComponent("Scenarios")) }

    @Test func shippedSuiteLoads() throws {
        let suite = try Self.suite()
        #expect(Set(suite.targets.keys) == ["hyperv-gen1", "kvm-virtio", "vmware-pvscsi", "virtualbox-ahci", "azure-gen1",
                                            "hyperv-gen2", "kvm-uefi"])
        // Every target is served its own native format, and the drivers' data agrees.
        #expect(suite.targets.mapValues(\.nativeFormat) == ["hyperv-gen1": "vhdx", "kvm-virtio": "qcow2", "vmware-pvscsi": "vmdk",
                                                             "virtualbox-ahci": "vdi", "azure-gen1": "vhd",
                                                             "hyperv-gen2": "vhdx", "kvm-uefi": "qcow2"])
        // UEFI targets (docs/uefi.md): OVMF on q35; everything else SeaBIOS.
        #expect(suite.targets.filter { $0.value.firmware == "ovmf" }.keys.sorted() == ["hyperv-gen2", "kvm-uefi"])
        #expect(suite.targets.values.allSatisfy { $0.firmware == "seabios" || $0.machine == "q35" })
        // OVMF's 4M code image read-only, the variable store a per-boot copy (docs/uefi.md,
        // "Firmware settings"); SeaBIOS targets get no flash at all.
        let ovmfArgs = BootRunner.arguments(disk: .file(path: "/d", format: "qcow2"), target: suite.targets["kvm-uefi"]!,
                                            varsPath: "/cell/console-main-ovmf-vars.fd").joined(separator: " ")
        #expect(ovmfArgs.contains("-machine q35 ") && ovmfArgs.contains("-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd -drive if=pflash,format=raw,unit=1,file=/cell/console-main-ovmf-vars.fd "), "\(ovmfArgs)")
        #expect(!BootRunner.arguments(disk: .file(path: "/d", format: "qcow2"), target: suite.targets["kvm-virtio"]!).joined(separator: " ").contains("pflash"))
        #expect(suite.targets["azure-gen1"]?.formatOptions == ["subformat": "fixed"])
        let foreign = try suite.scenario(named: "foreign-drivers-unreconfigured")
        #expect(foreign.expectation(for: "kvm-virtio") == .mustNotBoot(reason: "root device not found"))
        #expect(foreign.expectation(for: "virtualbox-ahci") == .boots)
        #expect(!foreign.reconfigure)
        // The reconfigured twin: same machine, every target must boot.
        let reconfigured = try suite.scenario(named: "foreign-drivers")
        #expect(reconfigured.reconfigure)
        #expect(reconfigured.machines == foreign.machines && reconfigured.seed == foreign.seed)
        #expect(reconfigured.targets.allSatisfy { reconfigured.expectation(for: $0) == .boots })
        #expect(reconfigured.targets.contains("vmware-pvscsi"))
        let steps = Pipeline.standard(for: reconfigured, target: suite.targets["kvm-virtio"]!).steps.map(\.name)
        #expect(steps == ["generate", "backup", "expose", "reconfigure", "mount"])
        #expect(!Pipeline.standard(for: foreign, target: suite.targets["kvm-virtio"]!).steps.map(\.name).contains("reconfigure"))
        // The volume keeps every controller's modules (the engine's source), the initramfs only its own.
        let onVolume = suite.volumeModules(for: foreign.machines[0])
        for m in ["ata_piix", "ahci", "virtio_blk", "virtio_pci", "vmw_pvscsi", "sd_mod", "ext4"] { #expect(onVolume.contains(m)) }
        #expect(foreign.machines[0].kernel == .generic)
        // Driver knowledge comes from the target files: ahci → virtualbox-ahci's module list, then
        // its network adapter's (e1000: the machine lived on VirtualBox).
        #expect(suite.initramfsModules(for: foreign.machines[0], in: foreign) == suite.targets["virtualbox-ahci"]!.modules + ["e1000"])
        let chain = try suite.scenario(named: "chain-compressed-encrypted")
        #expect(chain.backup.incrementals.count == 3)
        #expect(chain.backup.compression == .zstd && chain.backup.encryption == .aes256gcm)
        #expect(chain.backup.incrementals[2].deletes == ["/data/two.bin"])
        let vault = try suite.scenario(named: "vault-two-machines")
        #expect(vault.machines.map(\.name) == ["alpha", "beta"])
        #expect(vault.backup.vault == "shared")
        #expect(try suite.scenario(named: "relocated-volume").machines[0].partitionStart == 63)
        // Issue 13: the materialize scenario — volume-only zstd + AES on two targets of two
        // native formats — runs the materialize validator; no other scenario does.
        let mat = try suite.scenario(named: "materialize")
        #expect(mat.materialize == true && mat.backup.kind == .volumeOnly)
        #expect(mat.backup.compression == .zstd && mat.backup.encryption == .aes256gcm)
        #expect(Set(mat.targets.compactMap { suite.targets[$0]?.nativeFormat }).count >= 2)
        #expect(Pipeline.standard(for: mat, target: suite.targets["kvm-virtio"]!).validators.map(\.name).contains("materialize"))
        #expect(!Pipeline.standard(for: foreign, target: suite.targets["kvm-virtio"]!).validators.map(\.name).contains("materialize"))
        #expect(foreign.materialize == nil)
        // The UEFI pair: the same machine and backup, with and without a synthesized ESP.
        let esp = try suite.scenario(named: "uefi-esp-synthesized"), noESP = try suite.scenario(named: "uefi-no-esp")
        #expect(esp.machines == noESP.machines && esp.seed == noESP.seed && esp.machines[0].isUEFI)
        #expect(esp.backup.esp == .synthesize && noESP.backup.esp == BackupSpec.ESPMode.none)
        #expect(esp.machines[0].rootPartitionNumber == 2)
        #expect(esp.targets.allSatisfy { esp.expectation(for: $0) == .boots })
        guard case .mustNotBoot(let why) = noESP.expectation(for: "kvm-uefi") else { Issue.record("the twin must not boot"); return }
        #expect(why.contains("BdsDxe"))
        #expect(Pipeline.standard(for: esp, target: suite.targets["kvm-uefi"]!).validators.map(\.name).contains("gpt-esp"))
        #expect(try suite.scenario(named: "uefi-whole-disk").backup.kind == .disk)
        // A volume set of the same kind of machine (ESP + root, one image each).
        let set = try suite.scenario(named: "uefi-volume-set")
        #expect(set.backup.kind == .volumeSet && set.machines[0].isUEFI && set.tier == .extended)
    }

    static let good = """
        name: sample
        seed: 7
        machine:
          kernel: cloud
          filesystem: ext4
          volume_size: 32M
          marker: SAMPLE-OK
        targets: [kvm-virtio]

        """

    func parse(_ yaml: String) throws -> Scenario {
        try ScenarioLoader.parseScenario(yaml: yaml, file: "Scenarios/sample.yaml", targets: try Self.suite().targets)
    }

    func rejection(_ yaml: String) throws -> ScenarioError {
        do {
            _ = try parse(yaml)
        } catch let e as ScenarioError {
            #expect(e.file == "Scenarios/sample.yaml")
            return e
        }
        Issue.record("accepted a bad scenario")
        return ScenarioError(file: "", key: "", reason: "")
    }

    /// Issue 9: the suite keeps cells that reconfigure encrypted backups (a volume-only zstd +
    /// AES one, and one from an encrypted vault chain), each on at least two targets whose storage
    /// driver the machine's initramfs lacks — so reconfiguration must change it, through the
    /// passphrase — and the unencrypted twin of the first.
    @Test func suiteReconfiguresEncryptedBackups() throws {
        let suite = try Self.suite()
        func needsDrivers(_ s: Scenario) -> Bool {
            s.targets.filter { t in
                !suite.initramfsModules(for: s.machines[0], in: s).contains(suite.targets[t]!.controller.driver)
            }.count >= 2
        }
        let encrypted = try suite.scenario(named: "encrypted-reconfigured")
        #expect(encrypted.reconfigure && encrypted.backup.encryption == .aes256gcm && encrypted.backup.compression == .zstd)
        #expect(encrypted.backup.kind == .volumeOnly)
        #expect(encrypted.targets.allSatisfy { encrypted.expectation(for: $0) == .boots })
        #expect(needsDrivers(encrypted), "\(encrypted.targets)")
        let twin = try suite.scenario(named: "foreign-drivers")
        #expect(twin.backup.encryption == .none && twin.reconfigure)
        #expect(twin.machines == encrypted.machines && twin.seed == encrypted.seed)
        #expect(Set(encrypted.targets).isSubset(of: Set(twin.targets)))
        let chain = try suite.scenario(named: "vault-chain-encrypted-reconfigured")
        #expect(chain.reconfigure && chain.backup.encryption == .aes256gcm && chain.backup.vault != nil)
        #expect(chain.backup.incrementals.count >= 1)
        #expect(chain.targets.allSatisfy { chain.expectation(for: $0) == .boots })
        #expect(needsDrivers(chain), "\(chain.targets)")
    }

    /// Issue 14, a 4Kn GPT disk (docs/uefi.md, "4 KiB sectors"): the shipped cell, its LBAs in
    /// 4096-byte sectors, the boot runner told to present them; every target whose format (or
    /// firmware, or controller) cannot hold them is refused with the reason, never left to fail.
    @Test func fourKnSectorsWhereTheFormatsAllowIt() throws {
        let suite = try Self.suite()
        let s = try suite.scenario(named: "uefi-4kn-esp-synthesized")
        let m = s.machines[0]
        #expect(m.sectorSize == 4096 && m.isUEFI && s.targets == ["kvm-uefi"] && s.backup.esp == .synthesize)
        #expect(m.espStart == 256 && m.espSectorCount == 66_560 && m.partitionStart == 66_816)
        #expect(m.gptHeadBytes == 6 * 4096 && m.gptTailBytes == 5 * 4096)
        // The disk: root end + 5 backup sectors, rounded up to 1 MiB.
        #expect(m.diskSize == (66_816 * 4096 + (64 << 20) + 5 * 4096 + (1 << 20) - 1) / (1 << 20) * (1 << 20))
        let kvm = suite.targets["kvm-uefi"]!
        let args = BootRunner.arguments(disk: .file(path: "/d", format: "qcow2"), target: kvm, sectorSize: m.sectorSize)
        #expect(args.joined(separator: " ").contains("-global virtio-blk-pci.logical_block_size=4096 -global virtio-blk-pci.physical_block_size=4096"))
        #expect(!BootRunner.arguments(disk: .file(path: "/d", format: "qcow2"), target: kvm).contains("-global"), "512: no change")
        #expect(BootRunner.blockSizeArguments(sectorSize: 4096, target: suite.targets["hyperv-gen2"]!).contains("scsi-hd.logical_block_size=4096"))
        // 512-byte machines keep their encoding (and so their generator cache keys and goldens).
        let json = String(decoding: try JSONEncoder().encode(try suite.scenario(named: "uefi-relocated-volume").machines[0]), as: UTF8.self)
        #expect(!json.contains("logicalSectorSize"))

        // Every other target is refused for the stated reason (the format's, then the firmware's).
        let yaml = try String(contentsOf: Self.repo.appendingPathComponent("Scenarios/uefi-4kn-esp-synthesized.yaml"), encoding: .utf8)
        let reasons = ["hyperv-gen2": "QEMU 7.2's vhdx driver refuses", "vmware-pvscsi": "VMDK counts 512-byte sectors",
                       "azure-gen1": "VHD has no sector-size field", "virtualbox-ahci": "VDI's sector size is 512",
                       "hyperv-gen1": "QEMU 7.2's vhdx driver refuses", "kvm-virtio": "firmware seabios"]
        for (target, why) in reasons {
            do {
                _ = try ScenarioLoader.parseScenario(yaml: yaml.replacingOccurrences(of: "targets: [kvm-uefi]", with: "targets: [kvm-uefi, \(target)]"),
                                                     file: "uefi-4kn-esp-synthesized.yaml", targets: suite.targets)
                Issue.record("\(target) accepted for a 4Kn machine")
            } catch let e as ScenarioError {
                #expect(e.key == "targets[1]" && e.reason.contains("4096-byte sectors") && e.reason.contains(why), "\(target): \(e.reason)")
            }
            #expect(CertifyPlan.inapplicability(of: s, to: suite.targets[target]!, controller: nil)?.contains(why) == true, "\(target)")
        }
        #expect(CertifyPlan.inapplicability(of: s, to: kvm, controller: nil) == nil)
        // Paths whose lab checks count 512-byte sectors are refused, not half-checked.
        func refusal(_ text: String) -> ScenarioError? {
            do { _ = try ScenarioLoader.parseScenario(yaml: text, file: "uefi-4kn-esp-synthesized.yaml", targets: suite.targets); return nil } catch let e as ScenarioError { return e } catch { return nil }
        }
        #expect(refusal(yaml + "reconfigure: true\n")?.key == "reconfigure")
        #expect(refusal(yaml + "materialize: true\n")?.key == "materialize")
        #expect(refusal(yaml.replacingOccurrences(of: "logical_sector_size: 4096", with: "logical_sector_size: 2048"))?.reason.contains("512 or 4096") == true)
        #expect(refusal(yaml.replacingOccurrences(of: "partition_start: 66816", with: "partition_start: 2048"))?.reason.contains("66816") == true)
        let bios = Self.good.replacingOccurrences(of: "filesystem: ext4", with: "filesystem: ext4\n  logical_sector_size: 4096")
        let e = try rejection(bios)
        #expect(e.key == "machine.logical_sector_size" && e.reason.contains("UEFI"), "\(e)")
    }

    @Test func minimalScenarioGetsDefaults() throws {
        let s = try parse(Self.good)
        #expect(s.machines[0].bootloader == .extlinux)
        #expect(s.machines[0].partitionStart == 2048)
        #expect(s.machines[0].diskSize == 2048 * 512 + 32 << 20)
        #expect(s.backup == .default)
        #expect(s.expectation(for: "kvm-virtio") == .boots)
    }

    /// A user's backup tool (docs/bring-your-own-format.md): argv arrays kept word for word, both
    /// keys required, not combined with the .bli writer's options; the example suite loads.
    @Test func userBackupCommandAndSource() throws {
        let tool = Self.good.replacingOccurrences(of: "targets: [kvm-virtio]", with: """
            backup:
              command: ["my tool", "backup", "{source}", "{out}"]
              source_files: ["reader.py"]
              source: ["nbdkit", "{dir}/reader.py", "file={out}"]
            targets: [kvm-virtio]
            """)
        let s = try parse(tool)
        #expect(s.backup.command == ["my tool", "backup", "{source}", "{out}"])
        #expect(s.backup.source == ["nbdkit", "{dir}/reader.py", "file={out}"])
        #expect(s.backup.sourceFiles == ["reader.py"])
        #expect(try rejection(tool.replacingOccurrences(of: "  source: [\"nbdkit\", \"{dir}/reader.py\", \"file={out}\"]\n", with: "")).key == "backup.command")
        #expect(try rejection(tool.replacingOccurrences(of: "backup:\n", with: "backup:\n  compression: zstd\n")).reason.contains("cannot be combined"))
        let example = try LabSuite.load(directory: Self.repo.appendingPathComponent("examples/vendor-format/scenarios"))
        #expect(Set(example.scenarios.map(\.name)) == ["vendor-format", "qcow2-disk", "vmdk-volume"])
        #expect(example.scenarios.allSatisfy { $0.backup.command != nil && $0.backup.source != nil })
    }

    @Test func badFilesNameKeyAndReason() throws {
        var e = try rejection(Self.good.replacingOccurrences(of: "filesystem: ext4", with: "filesystem: btrfs"))
        #expect(e.key == "machine.filesystem" && e.reason.contains("btrfs") && e.reason.contains("fat32"))
        // ntfs is a windows-hives volume only.
        e = try rejection(Self.good.replacingOccurrences(of: "filesystem: ext4", with: "filesystem: ntfs"))
        #expect(e.key == "machine.filesystem" && e.reason.contains("os: windows-hives"))
        e = try rejection(Self.good.replacingOccurrences(of: "targets: [kvm-virtio]", with: "targets: [hyperv-gen3]"))
        #expect(e.key == "targets[0]" && e.reason.contains("unknown target 'hyperv-gen3'"))
        // UEFI machines: grub-efi boots from ext4 only, and the root must leave room for the ESP.
        e = try rejection(Self.good.replacingOccurrences(of: "filesystem: ext4", with: "filesystem: fat32\n  bootloader: grub-efi")
            .replacingOccurrences(of: "volume_size: 32M", with: "volume_size: 48M"))
        #expect(e.key == "machine.bootloader" && e.reason.contains("grub-efi: ext4"))
        e = try rejection(Self.good.replacingOccurrences(of: "filesystem: ext4", with: "filesystem: ext4\n  bootloader: grub-efi"))
        #expect(e.key == "machine.partition_start" && e.reason.contains("133120"))
        e = try rejection(Self.good + "backup:\n  kind: disk\n  esp: synthesize\n")
        #expect(e.key == "backup.esp" && e.reason.contains("volume-only"))
        e = try rejection(Self.good + "\ncolour: blue\n")
        #expect(e.key == "colour" && e.reason.contains("unknown key"))
        e = try rejection(Self.good.replacingOccurrences(of: "volume_size: 32M", with: "volume_size: lots"))
        #expect(e.key == "machine.volume_size")
        e = try rejection(Self.good.replacingOccurrences(of: "name: sample", with: "name: other"))
        #expect(e.key == "name" && e.reason.contains("file name"))
        e = try rejection(Self.good.replacingOccurrences(of: "  marker: SAMPLE-OK\n", with: ""))
        #expect(e.key == "machine.marker" && e.reason.contains("missing"))
        e = try rejection(Self.good + "expect:\n  hyperv-gen1: boots\n")
        #expect(e.key == "expect.hyperv-gen1" && e.reason.contains("does not list"))
        e = try rejection(Self.good + "expect:\n  kvm-virtio: maybe\n")
        #expect(e.key == "expect.kvm-virtio")
        e = try rejection(Self.good.replacingOccurrences(of: "targets: [kvm-virtio]", with: "targets: [virtualbox-ahci]"))
        #expect(e.key == "expect.virtualbox-ahci" && e.reason.contains("generic"))
        e = try rejection(Self.good.replacingOccurrences(of: "filesystem: ext4", with: "filesystem: ext4\n  bootloader: syslinux"))
        #expect(e.key == "machine.bootloader")
        e = try rejection(Self.good + "backup:\n  incrementals:\n    - write: [{path: relative, size: 1K}]\n")
        #expect(e.key == "backup.incrementals[0].write[0].path")
        e = try rejection(Self.good + "backup:\n  kind: volume-set\n  incrementals:\n    - write: [{path: /a, size: 1K}]\n")
        #expect(e.key == "backup.kind" && e.reason.contains("volume set"))
        e = try rejection("name: [unclosed")
        #expect(e.reason.contains("not valid YAML"))
    }

    @Test func materializeKeyIsABoolean() throws {
        #expect(try parse(Self.good + "materialize: true\n").materialize == true)
        #expect(try parse(Self.good + "materialize: false\n").materialize == nil)
        #expect(try rejection(Self.good + "materialize: maybe\n").key == "materialize")
    }

    @Test func badTargetFile() throws {
        let yaml = """
            name: t
            native_format: vhdx
            machine: pc
            controller: {kind: ide, driver: ata_piix}
            qemu: ["-hda", "x"]
            modules: [ata_piix]
            """
        #expect(throws: ScenarioError.self) { try ScenarioLoader.parseTarget(yaml: yaml, file: "targets/t.yaml") }
        do { _ = try ScenarioLoader.parseTarget(yaml: yaml, file: "targets/t.yaml") } catch let e as ScenarioError {
            #expect(e.key == "qemu" && e.reason.contains("{drive}"))
        }
        let ovmfOnPC = yaml.replacingOccurrences(of: "qemu: [\"-hda\", \"x\"]", with: "qemu: [\"-drive\", \"{drive},if=ide\"]\nfirmware: ovmf")
        do { _ = try ScenarioLoader.parseTarget(yaml: ovmfOnPC, file: "targets/t.yaml"); Issue.record("ovmf on pc accepted") } catch let e as ScenarioError {
            #expect(e.key == "firmware" && e.reason.contains("q35"))
        }
        do {
            _ = try ScenarioLoader.parseTarget(yaml: ovmfOnPC.replacingOccurrences(of: "ovmf", with: "coreboot"), file: "targets/t.yaml")
            Issue.record("an unknown firmware accepted")
        } catch let e as ScenarioError {
            #expect(e.key == "firmware" && e.reason.contains("seabios, ovmf"))
        }
    }
}
