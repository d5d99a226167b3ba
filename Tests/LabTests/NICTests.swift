import Foundation
import Testing
@testable import Lab
import TestSupport

/// Network adapters: every target names the adapter QEMU gives its guest and the Linux driver
/// that must bind to it; the guest reports both at boot and the `nic` validator holds them to the
/// target. The must-show: a reconfigured cell whose NIC driver is left out fails the NIC check
/// (and only it: the disk and the boot are fine).
@Suite(.serialized)
struct NICTests {
    static let tulip = Target.NIC(model: "tulip", driver: "tulip", pciID: "1011:0019", modules: ["tulip"])

    @Test func everyTargetNamesItsAdapter() throws {
        let suite = try ScenarioParsingTests.suite()
        let expected = ["hyperv-gen1": ("tulip", "tulip", "1011:0019"), "azure-gen1": ("tulip", "tulip", "1011:0019"),
                        "kvm-virtio": ("virtio-net-pci", "virtio_net", "1af4:1000"),
                        "vmware-pvscsi": ("vmxnet3", "vmxnet3", "15ad:07b0"), "virtualbox-ahci": ("e1000", "e1000", "8086:100e")]
        for (name, (model, driver, pci)) in expected {
            let nic = try #require(suite.targets[name]?.nic, "\(name) names no nic")
            #expect(nic.model == model && nic.driver == driver && nic.pciID == pci, "\(name): \(nic)")
            #expect(BootRunner.arguments(disk: .file(path: "/d", format: "raw"), target: suite.targets[name]!)
                .joined(separator: " ").contains("-nic user,model=\(model),restrict=on"))
        }
        // drivers.json (what `bootlab reconfigure` reads) names the same driver per target.
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: suite.directory.appendingPathComponent("drivers.json"))) as! [String: Any]
        let targets = json["targets"] as! [String: [String: Any]]
        let nics = json["nics"] as! [String: [String: Any]]
        // Targets whose profile gives QEMU an adapter (hyperv-gen2's is VMBus netvsc: none emulated).
        for (name, target) in suite.targets where target.nic != nil {
            let nicName = try #require(targets[name]?["nic"] as? String, "drivers.json: \(name) has no nic")
            let modules = try #require(nics[nicName]?["linuxModules"] as? [String])
            #expect(modules.contains(target.nic!.driver), "drivers.json nic \(nicName) lacks \(target.nic!.driver)")
        }
        // The volume carries every adapter's modules (what reconfiguration copies from).
        let machine = suite.scenarios[0].machines[0]
        for driver in ["tulip", "e1000", "virtio_net", "vmxnet3"] { #expect(suite.volumeModules(for: machine).contains(driver)) }
    }

    @Test func targetNICParsingRejectsNonsense() throws {
        let base = """
            name: t
            native_format: vhdx
            machine: pc
            controller: {kind: ide, driver: ata_piix}
            qemu: ["-drive", "{drive},if=ide"]
            modules: [ata_piix]

            """
        let ok = try ScenarioLoader.parseTarget(yaml: base + "nic: {model: e1000, driver: e1000, pci_id: \"8086:100e\", modules: [e1000]}\n", file: "targets/t.yaml")
        #expect(ok.nic?.driver == "e1000")
        #expect(try ScenarioLoader.parseTarget(yaml: base, file: "targets/t.yaml").nic == nil)
        for bad in ["nic: {model: e1000, driver: e1000, pci_id: \"8086:100e\", modules: [mii]}",
                    "nic: {model: e1000, driver: e1000, pci_id: \"8086-100e\", modules: [e1000]}",
                    "nic: {model: \"e1000,x=y\", driver: e1000, pci_id: \"8086:100e\", modules: [e1000]}",
                    "nic: {model: e1000, driver: e1000, pci_id: \"8086:100e\", modules: [e1000], extra: 1}"] {
            #expect(throws: ScenarioError.self, "\(bad)") { try ScenarioLoader.parseTarget(yaml: base + bad + "\n", file: "targets/t.yaml") }
        }
    }

    /// The validator's decision on console text, each way it can go.
    @Test func nicCheckDecisions() {
        let bound = "BOOTLAB-NIC-PCI: 0000:00:03.0 1011:0019 pci-driver=tulip\nBOOTLAB-NIC: eth0 driver=tulip\n"
        let unbound = "BOOTLAB: module tulip absent from this kernel\nBOOTLAB-NIC-PCI: 0000:00:03.0 1011:0019 pci-driver=none\n"
        let wrongDevice = "BOOTLAB-NIC-PCI: 0000:00:03.0 8086:100e pci-driver=e1000\nBOOTLAB-NIC: eth0 driver=e1000\n"
        let two = bound + "BOOTLAB-NIC-PCI: 0000:00:04.0 1011:0019 pci-driver=none\n"
        #expect(NICValidator.check(console: bound, nic: Self.tulip, expectation: (true, "r")).pass)
        #expect(!NICValidator.check(console: unbound, nic: Self.tulip, expectation: (true, "r")).pass)
        #expect(NICValidator.check(console: unbound, nic: Self.tulip, expectation: (false, "cloud kernel")).pass)
        #expect(!NICValidator.check(console: bound, nic: Self.tulip, expectation: (false, "cloud kernel")).pass)
        #expect(!NICValidator.check(console: wrongDevice, nic: Self.tulip, expectation: (true, "r")).pass)
        #expect(!NICValidator.check(console: two, nic: Self.tulip, expectation: (true, "r")).pass)
        #expect(!NICValidator.check(console: "BOOTLAB-MARKER: X\n", nic: Self.tulip, expectation: (true, "r")).pass)
        // A serial console can glue a line to kernel output: the prefix may sit mid-line.
        #expect(NICValidator.check(console: "[ 1.2] x BOOTLAB-NIC-PCI: 0000:00:03.0 1011:0019 pci-driver=tulip\nBOOTLAB-NIC: eth0 driver=tulip\n",
                                   nic: Self.tulip, expectation: (true, "r")).pass)
    }

    /// The must-show: `kvm-virtio-only-reconfigured` on hyperv-gen1 with the reconfiguration told
    /// to leave `tulip` out (`--inject-fault omit-driver:tulip`, the explicit fault option). Storage drivers
    /// still go in, so the guest boots from IDE; the tulip adapter is there but nothing drives
    /// it, and the nic validator says so.
    @Test(.requiresFUSE) func leftOutNICDriverFailsTheNICCheck() throws {
        let suite = try ScenarioParsingTests.suite()
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-nic-omit-\(getpid())")
        try? FileManager.default.removeItem(at: work)
        defer { try? FileManager.default.removeItem(at: work) }
        var options = RunOptions(goldenDirectory: ScenarioParsingTests.repo.appendingPathComponent("Golden"), bootTimeout: 90, workDirectory: work)
        options.faults = "omit-driver:tulip"
        let r = LabRunner(suite: suite, options: options).runCell(Cell(scenario: "kvm-virtio-only-reconfigured", target: "hyperv-gen1"))
        let record = { (name: String) in r.records.first { $0.name == name }?.outcome }
        let summary = r.records.map { "\($0.name)=\($0.outcome.verdict.rawValue): \($0.outcome.message.prefix(200))" }.joined(separator: "\n")
        #expect(r.verdict == .fail, "\(summary)")
        #expect(record("reconfigure")?.verdict == .pass, "\(summary)")
        #expect(record("boot")?.verdict == .pass, "\(summary)")
        #expect(record("qemu-img-compare")?.verdict == .pass, "\(summary)")
        #expect(record("nic")?.verdict == .fail, "\(summary)")
        #expect(record("nic")?.message.contains("tulip did not bind to tulip 1011:0019") == true, "\(summary)")
    }
}
