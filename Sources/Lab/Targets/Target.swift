import Foundation

/// A hypervisor profile as data (`Scenarios/targets/<name>.yaml`): what QEMU must emulate to stand
/// in for it, and which Linux modules a guest needs there. Driver knowledge lives only in these
/// files; the generator and the boot runner read it from here.
public struct Target: Sendable, Codable, Equatable {
    public struct Controller: Sendable, Codable, Equatable {
        /// e.g. ide, virtio-blk, pvscsi, ahci.
        public var kind: String
        /// The Linux driver that binds to it (the name scenarios use in `storage_drivers`).
        public var driver: String
    }

    /// The network adapter QEMU gives the guest (`nic:`), and the Linux driver that must bind to it.
    public struct NIC: Sendable, Codable, Equatable {
        /// QEMU's NIC model (`-nic user,model=…`): tulip, e1000, virtio-net-pci, vmxnet3.
        public var model: String
        /// The Linux driver `/sys/class/net/<if>/device/driver` names once it is bound.
        public var driver: String
        /// The adapter's PCI `vendor:device` (lower-case hex), as the guest reads it from sysfs.
        public var pciID: String
        /// Modules the guest loads for it, in load order (dependencies are resolved too).
        public var modules: [String]

        /// QEMU arguments: the adapter on a user-mode network with `restrict=on` (no way out:
        /// the guest only has to see and drive the device).
        public var qemuArguments: [String] { ["-nic", "user,model=\(model),restrict=on"] }
    }

    public var name: String
    public var summary: String
    /// The hypervisor's own disk format (vhdx, qcow2, vmdk, vdi): what exposure will synthesize.
    public var nativeFormat: String
    /// Options for that format as `-o` keys (`native_format_options`): e.g. VMDK
    /// `adapter_type`, VHD `subformat: fixed` for Azure.
    public var formatOptions: [String: String] = [:]
    /// QEMU `-machine` value: `pc` (i440fx) or `q35`.
    public var machine: String
    public var firmware: String
    public var controller: Controller
    /// QEMU arguments attaching the disk; `{drive}` is replaced by the drive options
    /// (`file=…,format=…,snapshot=on` or a block-driver option string).
    public var qemuArguments: [String]
    /// Modules a guest needs to see its disk here, in load order (dependencies first).
    public var modules: [String]
    /// A kernel flavour the target needs (the cloud kernel lacks AHCI), if any.
    public var requiresKernel: KernelFlavour?
    public var memoryMiB: Int
    /// The network adapter, if the target names one (nil: QEMU gets `-nic none`).
    public var nic: NIC? = nil
    public var notes: String
    public var file: String
    /// The target's own way to boot a disk (`boot_runner:`), e.g. a script that hands the file to
    /// a real Hyper-V, ESXi, VirtualBox or libvirt host; nil: the built-in QEMU runner.
    public var bootRunner: CustomBootRunner? = nil

    /// The boot runner's program made absolute when it is a relative path (`../runners/x.sh`):
    /// relative to the directory of the target file, wherever the command is run from.
    public func resolvingRunner(relativeTo directory: String) -> Target {
        guard var r = bootRunner, let program = r.command.first, program.contains("/"), !program.hasPrefix("/") else { return self }
        var t = self
        r.command[0] = URL(fileURLWithPath: directory).appendingPathComponent(program).standardizedFileURL.path
        t.bootRunner = r
        return t
    }

    /// The hardware profile alone: equal for two files that describe the same target even if
    /// they live in different places or boot it another way (goldens depend on this only).
    public var profile: Target {
        var t = self
        t.file = ""
        t.bootRunner = nil
        return t
    }
}

/// `boot_runner:` in a target file: a command template that boots one disk file and a way to
/// read the guest's console back. Placeholders in `command` (whole arguments or parts of them):
/// `{disk}` the disk file (read-only; the runner must keep the guest's writes elsewhere, e.g. a
/// differencing disk or QEMU's `snapshot=on`), `{format}` its format as QEMU names it (vhdx, vmdk,
/// qcow2, vdi, vpc, raw), `{console}` the file the console must end up in, `{marker}` the text the
/// guest prints when it booted, `{memory}` MiB, `{name}` the target's name, `{timeout}` seconds.
public struct CustomBootRunner: Sendable, Codable, Equatable {
    public enum Console: String, Sendable, Codable, CaseIterable {
        /// The runner writes the serial console to `{console}` itself.
        case file
        /// The runner prints the console on its stdout; the lab writes it to the console file.
        case stdout
    }

    public var command: [String]
    public var console: Console
    /// Seconds; nil: the lab's boot timeout.
    public var timeout: Double?

    public static let placeholders = ["{disk}", "{format}", "{console}", "{marker}", "{memory}", "{name}", "{timeout}"]

    public init(command: [String], console: Console, timeout: Double? = nil) {
        self.command = command
        self.console = console
        self.timeout = timeout
    }

    public var summary: String { command.joined(separator: " ") + " (console: \(console.rawValue))" }
}
