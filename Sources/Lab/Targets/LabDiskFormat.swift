import DiskFormats

/// What the lab needs to know about a target's native format, in one place: how QEMU names it,
/// the plugin file's name, the readers we did not write that must agree with ours, and the
/// layout dump recorded in goldens.
public struct LabDiskFormat: Sendable, Equatable {
    /// The `DiskFormatRegistry` name (vhdx, vmdk, vhd, qcow2, vdi).
    public let name: String
    /// The target's `subformat` option, if any (VHD `fixed`).
    public let subformat: String?

    public init(name: String, subformat: String? = nil) {
        self.name = name.lowercased()
        self.subformat = subformat
    }

    /// A fixed VHD is the disk's bytes followed by a 512-byte footer: nothing of the format comes
    /// before the payload, so a reader that probes sector 0 (QEMU's vpc driver looks there for a
    /// footer copy) reads the disk itself. Metadata-only access for it is the footer at the end,
    /// which is what Hyper-V and Azure read.
    public var metadataOnlyAtEnd: Bool { name == "vhd" && subformat == "fixed" }

    /// The format a target serves: its `native_format`. A format this build cannot write yet is a
    /// lab error, never a silent VHDX (the target would be certified with a file it never opens).
    public static func of(_ target: Target) throws -> LabDiskFormat {
        guard DiskFormatRegistry.driver(named: target.nativeFormat) != nil else {
            throw LabError.argument("target \(target.name)", reason: "native_format \(target.nativeFormat) is not a format this bootlab writes (\(DiskFormatRegistry.names.joined(separator: ", ")))")
        }
        return LabDiskFormat(name: target.nativeFormat, subformat: target.formatOptions["subformat"])
    }

    public var driver: any DiskFormatDriver { DiskFormatRegistry.driver(named: name)! }

    /// QEMU's block driver name (`-f`, `driver=`): VHD is `vpc` in QEMU.
    public var qemuDriver: String { name == "vhd" ? "vpc" : name }

    /// The plugin file's name for a machine.
    public func fileName(machine: String) -> String { "\(machine).\(name)" }

    /// An independent reader Debian packages for this format: an info tool printing the media
    /// size and a FUSE mounter exposing the virtual disk as one file.
    public struct IndependentReader: Sendable, Equatable {
        public var library: String
        public var info: String
        public var mount: String
        /// The file the mounter shows inside its mount point.
        public var mountedFile: String
    }

    public var independentReader: IndependentReader? {
        switch name {
        case "vhdx", "vhd": return IndependentReader(library: "libvhdi", info: "vhdiinfo", mount: "vhdimount", mountedFile: "vhdi1")
        case "vmdk": return IndependentReader(library: "libvmdk", info: "vmdkinfo", mount: "vmdkmount", mountedFile: "vmdk1")
        case "qcow2": return IndependentReader(library: "libqcow", info: "qcowinfo", mount: "qcowmount", mountedFile: "qcow1")
        default: return nil  // VDI: QEMU is the only independent reader Debian has.
        }
    }
}
