import Archives
import Foundation
@testable import Lab
import Reconfigure
import Testing

/// Hyper-V gen2's modules (drivers.json `hypervisorModules`): the data, the volumes that carry
/// them, and the validator's decision on a real (encoded, gzip-compressed, decoded) initramfs.
@Suite struct HypervisorModulesTests {
    static let wanted = ["hv_vmbus", "hv_storvsc", "hv_netvsc"]

    /// An initramfs like the generator's: modules by path in `/etc/bootlab/modules`.
    static func initramfs(files: [String], listed: [String]) throws -> Reconfigure.Initramfs {
        let prefix = "lib/modules/6.1.0-56-cloud-amd64/"
        var entries: [CpioEntry] = [.directory("lib"), .file("init", Array("#!/bin/sh\n".utf8), mode: 0o755)]
        for f in files { entries.append(.file(prefix + f, [0x7F, 0x45, 0x4C, 0x46])) }
        entries.append(.file(ModuleLoadList.bootlabPath, Array((listed.joined(separator: "\n") + "\n").utf8)))
        // Through the real encoder and decoder (gzip + newc cpio), as the validator reads the disk's file.
        let bytes = try Reconfigure.Initramfs(compression: .gzip, entries: entries).encode()
        return try Reconfigure.Initramfs.decode(bytes)
    }

    static let paths = ["hv_vmbus": "kernel/drivers/hv/hv_vmbus.ko", "hv_storvsc": "kernel/drivers/scsi/hv_storvsc.ko",
                        "hv_netvsc": "kernel/drivers/net/hyperv/hv_netvsc.ko"]

    @Test func driversDataNamesThemForHyperVGen2Only() throws {
        let suite = try ScenarioParsingTests.suite()
        #expect(suite.hypervisorModules(for: ["hyperv-gen2"]) == Self.wanted)
        for t in suite.targets.keys where t != "hyperv-gen2" { #expect(suite.hypervisorModules(for: [t]).isEmpty, "\(t)") }
        // Only a scenario that targets hyperv-gen2 carries them on its volumes (other goldens hold).
        let gen2 = try suite.scenario(named: "uefi-esp-synthesized")
        #expect(gen2.reconfigure)
        let onGen2 = suite.volumeModules(for: gen2.machines[0], in: gen2)
        for m in Self.wanted { #expect(onGen2.contains(m)) }
        let other = try suite.scenario(named: "foreign-drivers")
        let onOther = suite.volumeModules(for: other.machines[0], in: other)
        #expect(onOther == suite.volumeModules(for: other.machines[0]))
        for m in Self.wanted { #expect(!onOther.contains(m)) }
        // The validator runs on reconfigured cells.
        #expect(Pipeline.standard(for: gen2, target: suite.targets["hyperv-gen2"]!).validators.map(\.name).contains("hypervisor-modules"))
    }

    @Test func completeInitramfsPasses() throws {
        let all = Self.wanted.map { Self.paths[$0]! }
        let img = try Self.initramfs(files: all, listed: all)
        #expect(HypervisorModulesValidator.missing(Self.wanted, in: img).isEmpty)
    }

    /// What `omit-driver:hv_storvsc` (the FaultPlan's fault) leaves: the file absent and
    /// unlisted. The validator names the module and why.
    @Test func omittedModuleIsNamed() throws {
        let kept = ["hv_vmbus", "hv_netvsc"].map { Self.paths[$0]! }
        let img = try Self.initramfs(files: kept, listed: kept)
        let missing = HypervisorModulesValidator.missing(Self.wanted, in: img)
        #expect(missing == ["hv_storvsc (no hv_storvsc.ko in the initramfs)"])
    }

    /// A Debian initramfs-tools image (MODULES=most, udev, no /conf/modules): udev loads the
    /// modules by modalias, so modules.alias naming them counts; without udev, or without an
    /// alias for a module, the same image still fails.
    @Test func udevImageLoadsByModalias() throws {
        let prefix = "usr/lib/modules/6.1.0-50-cloud-amd64/"
        func image(udev: Bool, aliases: [String]) throws -> Reconfigure.Initramfs {
            var entries: [CpioEntry] = [.file("init", Array("#!/bin/sh\n".utf8), mode: 0o755),
                                        .file("scripts/init-top/udev", Array("#!/bin/sh\n".utf8), mode: 0o755)]
            // As in Debian 12's image: systemd-udevd is a symlink to udevadm.
            if udev { entries += [.file("usr/bin/udevadm", [0x7F, 0x45, 0x4C, 0x46], mode: 0o755), .symlink("usr/lib/systemd/systemd-udevd", to: "../../bin/udevadm")] }
            for m in Self.wanted { entries.append(.file(prefix + Self.paths[m]!, [0x7F, 0x45, 0x4C, 0x46])) }
            entries.append(.file(prefix + "modules.alias", Array(aliases.map { $0 + "\n" }.joined().utf8)))
            return try Reconfigure.Initramfs.decode(try Reconfigure.Initramfs(compression: .gzip, entries: entries).encode())
        }
        let all = ["alias acpi*:VMBUS:* hv_vmbus", "alias vmbus:d96361baa104294db60572e2ffb1dc7f hv_storvsc",
                   "alias vmbus:635161f83edfc546913ff2d2f965ed0e hv_netvsc"]
        #expect(HypervisorModulesValidator.missing(Self.wanted, in: try image(udev: true, aliases: all)).isEmpty)
        #expect(HypervisorModulesValidator.missing(Self.wanted, in: try image(udev: true, aliases: Array(all.dropFirst())))
                == ["hv_vmbus (the initramfs has no /etc/bootlab/modules or /conf/modules load list)"])
        #expect(HypervisorModulesValidator.missing(Self.wanted, in: try image(udev: false, aliases: all)).count == 3)
    }

    @Test func presentButNotLoadedIsNamed() throws {
        let all = Self.wanted.map { Self.paths[$0]! }
        let img = try Self.initramfs(files: all, listed: all.filter { !$0.contains("vmbus") })
        #expect(HypervisorModulesValidator.missing(Self.wanted, in: img) == ["hv_vmbus (its .ko is there, but the load list does not name it)"])
    }
}
