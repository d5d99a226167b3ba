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

    /// Why a disk of `sectorSize`-byte logical sectors cannot be served in `format` and booted
    /// by the lab's QEMU (7.2), or nil when it can — "where the formats allow it" (docs/uefi.md,
    /// "4 KiB sectors"). qcow2 stores no sector size: the hypervisor presents the bytes with the
    /// sectors it is told (`logical_block_size`), so it holds a 4Kn disk.
    public static func sectorSizeRefusal(format: String, sectorSize: Int) -> String? {
        guard sectorSize != 512 else { return nil }
        switch format.lowercased() {
        case "qcow2": return sectorSize == 4096 ? nil : "only 512 and 4096-byte sectors are presented"
        case "vhdx": return "VHDX records 4096-byte logical sectors, but QEMU 7.2's vhdx driver refuses to open such a file (\"Operation not supported\"), so no lab boot can read it (libvhdi can; Hyper-V would)"
        case "vhd": return "VHD has no sector-size field: its sectors are 512 bytes"
        case "vmdk": return "VMDK counts 512-byte sectors (descriptor extents, grain tables): it has no 4096-byte sectors"
        case "vdi": return "VDI's sector size is 512 bytes in every image VirtualBox writes or QEMU reads"
        default: return "\(format) is not a format the lab knows to hold \(sectorSize)-byte sectors"
        }
    }

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
