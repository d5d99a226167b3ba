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
}
