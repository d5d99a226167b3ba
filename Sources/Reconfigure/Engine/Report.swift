import BlockCore

/// One change the engine made (or, in a dry run, would make) inside the guest.
public struct ReconfigurationChange: Codable, Sendable, Equatable {
    /// What kind of change: `initramfs-module`, `module-load-list`, `modules-dep`, `boot-root-uuid`,
    /// `fstab-uuid`, `initramfs-tools-modules`, `update-initramfs`, `windows-service`,
    /// `windows-critical-device`, `windows-mounted-devices`, `bcd-device`, `ntfs-hidden-sectors`,
    /// `grub-boot-code`.
    public var kind: String
    /// Where: `<device>:<path in that file system>` (or `<device>` for boot-sector edits).
    public var location: String
    public var detail: String

    public init(kind: String, location: String, detail: String) {
        self.kind = kind
        self.location = location
        self.detail = detail
    }
}

/// What the engine found and did. `changes` empty means the guest already fit the target
/// (a second run reports exactly that) and the layer was not written.
public struct ReconfigurationReport: Codable, Sendable, Equatable {
    public var target: String
    public var controller: String
    /// The target's network adapter (`nics` in drivers.json), whose Linux modules were added too.
    public var nic: String?
    /// `linux-initramfs` (boot loader config + initramfs with a module load list),
    /// `linux-initramfs-tools` (Debian/Ubuntu), `windows`, `linux-grub` (only GRUB boot code was
    /// examined: a grub.cfg, but neither initramfs-tools nor a syslinux initramfs).
    public var os: String
    /// File systems libguestfs saw: `device type`.
    public var filesystems: [String]
    public var bootLoader: String?
    public var bootConfig: String?
    public var kernelVersion: String?
    public var initramfs: [String]
    /// The storage/boot drivers the guest's initramfs loaded before (module names), or the
    /// Windows services that were boot-start.
    public var originalDrivers: [String]
    /// Modules (paths under /lib/modules/<version>) this run added, in load order.
    public var addedModules: [String]
    /// Network-adapter modules the guest's modules.dep does not list (built into its kernel, or
    /// not built at all: Debian's cloud kernel has neither tulip nor e1000), so not added. A
    /// storage module missing there is an error instead: without it the guest cannot boot.
    public var skippedModules: [String] = []
    public var changes: [ReconfigurationChange]
    /// Ranges of the disk this run wrote into the reconfiguration layer.
    public var layerWrites: [Extent]
    public var layerBytesWritten: UInt64

    public var changed: Bool { !changes.isEmpty }

    public init(target: String, controller: String, os: String) {
        self.target = target
        self.controller = controller
        self.os = os
        filesystems = []
        initramfs = []
        originalDrivers = []
        addedModules = []
        changes = []
        layerWrites = []
        layerBytesWritten = 0
    }
}
