/// One synthetic machine-and-backup case of the lab, read from `Scenarios/<name>.yaml`
/// (documented in docs/scenarios.md). Plain data: the runner decides what to do with it.
public struct Scenario: Sendable, Codable, Equatable {
    public var name: String
    public var summary: String
    /// Every generated identifier (UUIDs, hash seeds, disk signature, file contents) derives from it.
    public var seed: UInt64
    /// Usually one machine; a vault scenario backs up several.
    public var machines: [SourceMachine]
    public var backup: BackupSpec
    /// Target names (files under `Scenarios/targets/`), in the order given.
    public var targets: [String]
    /// What must happen on each target; a target without an entry must boot.
    public var expectations: [String: Expectation]
    /// Where it was read from (for messages); not part of its identity.
    public var file: String
    /// Reconfigure each exposed machine's OS for the cell's target (`reconfigure: true`): the
    /// lab's `ReconfigureStep` runs `bootlab reconfigure PLUGIN --target T` before the mount.
    public var reconfigure: Bool = false
    /// Materialize each exposed plugin (`materialize: true`): the lab's `MaterializeValidator`
    /// fills its replacement with interruptions, finalizes it and checks the native file. Nil
    /// when absent, so the canonical JSON (golden inputs) of other scenarios is unchanged.
    public var materialize: Bool? = nil
    /// `tier: extended`: left out of `bootlab lab run` without scenario names unless `--extended`
    /// (heavy cells: real distributions); nil is the default tier (left out of the encoding, so
    /// existing scenarios keep their digest).
    public var tier: Tier? = nil

    public enum Tier: String, Sendable, Codable, CaseIterable {
        case `default`
        case extended
    }

    public var isExtended: Bool { tier == .extended }

    public func expectation(for target: String) -> Expectation { expectations[target] ?? .boots }
}

public enum KernelFlavour: String, Sendable, Codable, CaseIterable {
    /// `linux-image-cloud-amd64`: fast to boot under TCG, but no AHCI driver.
    case cloud
    /// `linux-image-amd64`.
    case generic

    public var metaPackage: String { self == .cloud ? "linux-image-cloud-amd64" : "linux-image-amd64" }
}

public enum FileSystemKind: String, Sendable, Codable, CaseIterable {
    case ext4
    case fat32
    /// Only for `os: windows-hives` machines (mkntfs + ntfs-3g).
    case ntfs

    /// The MBR partition type the source machine's installer would have used.
    public var partitionType: UInt8 {
        switch self {
        case .ext4: return 0x83
        case .fat32: return 0x0C
        case .ntfs: return 0x07
        }
    }
    public var linuxType: String {
        switch self {
        case .ext4: return "ext4"
        case .fat32: return "vfat"
        case .ntfs: return "ntfs"
        }
    }
}

public enum BootLoaderKind: String, Sendable, Codable, CaseIterable {
    case extlinux
    case syslinux
    /// A UEFI machine (docs/uefi.md): a GPT disk with an EFI System Partition (partition 1, FAT32,
    /// at LBA 2048, 64 MiB) holding a GRUB EFI loader at \EFI\BOOT\BOOTX64.EFI, the ext4 root as
    /// partition 2 with GRUB's x86_64-efi modules and /boot/grub/grub.cfg on it.
    case grubEFI = "grub-efi"
    /// GRUB 2 from the volume itself (`os: debian-grub` machines only).
    case grub
}

/// What runs on a source machine. The default (nil in `SourceMachine.os`) is the generator's tiny
/// busybox Linux; `debian-grub` is a real distribution.
public enum MachineOS: String, Sendable, Codable, CaseIterable {
    /// The generator's own guest: Debian kernel + busybox initramfs, extlinux/syslinux.
    case tiny
    /// A debootstrapped Debian 12 (minbase, cloud kernel, systemd, initramfs-tools, GRUB's
    /// i386-pc modules on the volume, no boot code anywhere): `Scenarios/machines/make-debian-grub.sh`,
    /// built once into `$BOOTLAB_CACHE/debian-grub/`. A volume-only backup of it boots only after
    /// reconfiguration regenerates GRUB's boot code.
    case debianGrub = "debian-grub"
    /// A debootstrapped Debian 12 installed for UEFI (minbase, cloud kernel, systemd,
    /// initramfs-tools, grub-efi-amd64-bin's x86_64-efi modules on the volume, fstab with a
    /// `/boot/efi` vfat entry by UUID): `Scenarios/machines/make-debian-uefi.sh`, built once into
    /// `$BOOTLAB_CACHE/debian-uefi/`; the generator puts it on a GPT disk as partition 2 behind an
    /// ESP like any `bootloader: grub-efi` machine's (docs/uefi.md, "A real Debian UEFI install").
    case debianUEFI = "debian-uefi"
    /// An NTFS volume holding a Windows installation's `SYSTEM` and `BCD` hives (no Windows: we
    /// have no Windows kernel to boot), so the Windows reconfiguration runs in the lab and its
    /// edits are read back with hivex (`WindowsHivesValidator`). `DiskGenerator.generateWindows`.
    case windowsHives = "windows-hives"

    /// A debootstrapped Debian (GRUB + systemd, marker `BOOTLAB-MARKER <marker> booted`).
    public var isDebian: Bool { self == .debianGrub || self == .debianUEFI }
}

public struct SourceMachine: Sendable, Codable, Equatable {
    public var name: String
    public var kernel: KernelFlavour
    public var filesystem: FileSystemKind
    public var bootloader: BootLoaderKind
    public var volumeSize: UInt64
    /// The partition's first LBA on the original disk (63 for old DOS-style layouts, 2048 today).
    public var partitionStart: UInt64
    /// Whole source disk size; defaults to partition end rounded up to 1 MiB.
    public var diskSize: UInt64
    /// Controller drivers carried by the initramfs, by the targets' `controller.driver` names
    /// (e.g. `ahci`); nil means "those of every target of the scenario".
    public var storageDrivers: [String]?
    /// Printed by the guest only after its root file system is mounted and this text read from it.
    public var marker: String

    /// GPT with an ESP before the root (UEFI machines), else an MBR with one partition.
    public var isUEFI: Bool { bootloader == .grubEFI }
    /// The root volume's partition number (what a volume-only backup takes).
    public var rootPartitionNumber: Int { isUEFI ? 2 : 1 }
    /// The source ESP of a UEFI machine: LBA 2048, 64 MiB (FAT32 needs ≥ 33 MiB at 512 B/cluster).
    public static let espStartLBA: UInt64 = 2048
    public static let espSectors: UInt64 = 131_072
    /// nil: the tiny Linux (left out of the encoding, so existing machines keep their spec digest).
    public var os: MachineOS? = nil
    /// `logical_sector_size: 4096`: a 4Kn disk (docs/uefi.md, "4 KiB sectors") — its GPT, ESP and
    /// partition LBAs count 4096-byte sectors, and the boot runner presents 4096-byte logical and
    /// physical blocks. nil: 512 (left out of the encoding, so existing machines keep their digest).
    public var logicalSectorSize: Int? = nil

    /// The disk's logical sector size: every LBA of the machine (`partitionStart`, the ESP) counts these.
    public var sectorSize: Int { logicalSectorSize ?? 512 }
    /// The source ESP's first LBA: 1 MiB, in the disk's sectors.
    public var espStart: UInt64 { (1 << 20) / UInt64(sectorSize) }
    /// The source ESP's length in sectors: 64 MiB at 512 bytes; 260 MiB at 4096 bytes, the
    /// smallest common FAT32 with 4 KiB clusters (≥ 65 525 clusters; what Windows makes on 4Kn).
    public var espSectorCount: UInt64 { sectorSize == 512 ? Self.espSectors : (260 << 20) / UInt64(sectorSize) }
    /// The GPT's backup entry array and header at the disk's end (sgdisk's 128 × 128-byte array).
    public var gptTailBytes: UInt64 { (1 + (16_384 + UInt64(sectorSize) - 1) / UInt64(sectorSize)) * UInt64(sectorSize) }
    /// The primary GPT's protective MBR, header and entry array at the disk's start.
    public var gptHeadBytes: UInt64 { gptTailBytes + UInt64(sectorSize) }

    /// The console line that proves the boot: `BOOTLAB-MARKER: <marker>` from the tiny Linux's
    /// init; `BOOTLAB-MARKER debian-grub booted` (`debian-uefi`) from the Debian machines' systemd unit.
    public var markerLine: String {
        os?.isDebian == true ? "BOOTLAB-MARKER \(marker) booted" : Initramfs.markerPrefix + marker
    }
}

public struct BackupSpec: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case volumeOnly = "volume-only"
        case disk
        /// Every partition of a GPT machine's disk, one `.bli` each plus a manifest (a volume
        /// set, docs/formats/gpt.md), composed back into one disk at expose.
        case volumeSet = "volume-set"
    }

    public enum Compression: String, Sendable, Codable, CaseIterable {
        case none
        case zstd
    }

    public enum Encryption: String, Sendable, Codable, CaseIterable {
        case none
        case aes256gcm = "aes-256-gcm"
    }

    public var kind: Kind
    public var blockSize: UInt64
    public var compression: Compression
    public var encryption: Encryption
    /// Applied in order after the full backup; each becomes one incremental.
    public var incrementals: [ChangeSet]
    /// A named deduplicating vault that holds every machine's backup.
    public var vault: String?
    /// Where exposure places a volume-only backup's partition (LBA); nil keeps its original start.
    public var exposePartitionStart: UInt64? = nil
    /// How the exposed disk reaches QEMU: a FUSE-mounted `.vhdx` file (QEMU's vhdx driver over a
    /// plain file) or `bootlab serve` over NBD (QEMU's vhdx driver over an NBD export).
    public var frontend: FrontEnd = .fuse
    /// Volume-only backups of UEFI machines: expose with a synthesized ESP (`bootlab expose --esp`)
    /// or without one (nil: none — the must-not-boot twin).
    public var esp: ESPMode? = nil

    public enum ESPMode: String, Sendable, Codable, CaseIterable {
        case synthesize
        case none
    }
    /// A user's own backup tool instead of the built-in `.bli` writer (docs/bring-your-own-format.md):
    /// an argv array run once per machine, placeholders substituted per argument — `{source}` (the
    /// machine's disk, or its volume for volume-only), `{out}` (the backup to write, in the
    /// plugin directory), `{dir}` (that directory), `{machine}`, `{scenario_dir}`. No shell.
    public var command: [String]? = nil
    /// How `expose --source` reads the tool's output, as argv words with the same placeholders:
    /// `["nbdkit", PLUGIN, ARG…]`, `["qemu-nbd", PATH]`, `["image", PATH]`, `["nbd", URI]`.
    /// Relative paths are relative to the scenario's directory.
    public var source: [String]? = nil
    /// Files (relative to the scenario's directory) copied into the plugin directory before the
    /// backup command runs — the source's plugin program and what it imports — so the plugin's
    /// pointer names them inside its tree (no allowance needed, no machine-specific paths).
    public var sourceFiles: [String] = []

    public enum FrontEnd: String, Sendable, Codable, CaseIterable {
        case fuse
        case nbd
    }

    public static let `default` = BackupSpec(kind: .volumeOnly, blockSize: 64 * 1024, compression: .none,
                                             encryption: .none, incrementals: [], vault: nil)
}

/// File-level changes on the source volume between two backups.
public struct ChangeSet: Sendable, Codable, Equatable {
    public struct FileWrite: Sendable, Codable, Equatable {
        /// Absolute path on the volume.
        public var path: String
        /// Contents are seeded pseudo-random bytes of this size.
        public var size: UInt64
    }

    public var writes: [FileWrite]
    public var deletes: [String]
}

public enum Expectation: Sendable, Codable, Equatable {
    case boots
    /// The boot must fail and the console must match this pattern (a case-insensitive regular
    /// expression), so a boot that fails for another reason is a failure, not a pass.
    case mustNotBoot(reason: String)
    /// Not booted at all, for the stated reason (e.g. no Windows kernel to boot): no boot step
    /// runs; the report shows "not booted (reason)", which is neither a pass of a boot nor a skip.
    case notBooted(reason: String)

    public var summary: String {
        switch self {
        case .boots: return "boots"
        case .mustNotBoot(let reason): return "must not boot (\(reason))"
        case .notBooted(let reason): return "not booted (\(reason))"
        }
    }
}
