import BackupImage
import BlockCore
import DiskFormats

/// Turns a backup into the disk the hypervisor should see: whole-disk backups pass through
/// unchanged; volume-only backups get a synthesized MBR, the volume at its (original or chosen)
/// partition start, boot-sector patches where it moved, and zero gap and tail.
public enum DiskComposer {
    /// syslinux's generic MBR boot code (Debian's syslinux-common).
    public static let defaultBootCodePath = "/usr/lib/syslinux/mbr/mbr.bin"
    /// Where a volume goes when the backup does not say where it was.
    public static let defaultPartitionStartLBA: UInt64 = 2048

    public struct Options: Sendable {
        public var partitionStartLBA: UInt64?
        /// 440 bytes of MBR boot code; nil reads `defaultBootCodePath`.
        public var bootCode: [UInt8]?
        /// Deliberate corruption for lab fault tests (`mbr-byte`): empty unless the caller passes
        /// a plan (`bootlab expose --inject-fault`, the lab's expose step).
        public var faults: FaultPlan = .none
        public init(partitionStartLBA: UInt64? = nil, bootCode: [UInt8]? = nil) {
            self.partitionStartLBA = partitionStartLBA
            self.bootCode = bootCode
        }
    }

    public enum CompositionError: Error, CustomStringConvertible {
        case bootCode(String)
        case unsupported(String)
        public var description: String {
            switch self {
            case .bootCode(let s): return "MBR boot code: \(s)"
            case .unsupported(let s): return "cannot compose a disk: \(s)"
            }
        }
    }

    /// Loads boot code: a 440-byte file, or a 512-byte MBR sector whose first 440 bytes are used.
    public static func loadBootCode(path: String) throws -> [UInt8] {
        let f: RawFile
        do { f = try RawFile(path: path) } catch { throw CompositionError.bootCode("\(error) (install syslinux-common or pass --boot-code)") }
        guard f.size >= 440, f.size <= 512 else {
            throw CompositionError.bootCode("\(path) is \(f.size) bytes; expected 440 (boot code) or 512 (an MBR sector)")
        }
        return try f.read(at: 0, count: 440)
    }

    /// Plans the composition for `backup` (reads only the volume's boot sector).
    public static func plan(header: BackupHeader, volume: any BlockSource, options: Options) throws -> PluginPointer.Composition {
        switch header.sourceKind {
        case .disk:
            if options.partitionStartLBA != nil {
                throw CompositionError.unsupported("--partition-start applies to volume backups; this backup holds a whole disk")
            }
            return .init(kind: "disk", diskSize: volume.size)
        case .volume:
            let sector = UInt64(512)
            guard header.logicalSectorSize == 512 || header.logicalSectorSize == 0 else {
                throw CompositionError.unsupported("volumes from \(header.logicalSectorSize)-byte-sector disks need a GPT composition, which is not implemented")
            }
            let original = header.partitionStartLBA
            let start = options.partitionStartLBA ?? (original != 0 ? original : defaultPartitionStartLBA)
            guard start >= 1, start <= UInt64(UInt32.max) else {
                throw CompositionError.unsupported("partition start LBA \(start) is outside what an MBR can address")
            }
            let offset = start * sector
            var diskSize = ComposedDisk.defaultDiskSize(partitionOffset: offset, volumeSize: volume.size)
            // Keep the original disk's size when the volume still fits it: the composed disk then
            // equals the original disk byte for byte (qemu-img compare against it is exact).
            if header.originalDiskSize >= offset + volume.size, header.originalDiskSize % sector == 0 {
                diskSize = header.originalDiskSize
            }
            let sectors = (volume.size + sector - 1) / sector
            guard sectors <= UInt64(UInt32.max) else {
                throw CompositionError.unsupported("volume of \(volume.size) bytes is too large for an MBR partition")
            }
            let bootCode = try options.bootCode ?? loadBootCode(path: defaultBootCodePath)
            guard bootCode.count == 440 else { throw CompositionError.bootCode("expected 440 bytes, got \(bootCode.count)") }
            let type = header.mbrPartitionType != 0 ? header.mbrPartitionType : partitionType(forHint: header.fileSystemHint)
            // GPT sources have no active flag; a BIOS MBR boot needs one.
            let bootable = header.partitionScheme == .mbr ? header.bootable : true
            let signature = header.mbrDiskSignature != 0
                ? header.mbrDiskSignature
                : GUID.derived(seed: header.imageID.bytes, label: "disk-signature").bytes.le32(0)
            let mbr = MBR(bootCode: bootCode, diskSignature: signature,
                          partitions: [MBR.Partition(type: type, bootable: bootable, startLBA: UInt32(start), sectorCount: UInt32(sectors)), nil, nil, nil])
            var patches = try BootSectorPatch.patches(volume: volume, newStartLBA: start)
            var sector0 = mbr.encode()
            // Lab fault plan (test-only, `FaultPlan`): each site is the bug a composer could have.
            let f = options.faults
            options.faults.corruptMBR(&sector0)
            if f.skipsBootPatch { patches = [] }
            for o in f.volumeBytes where o < volume.size {
                if let i = patches.firstIndex(where: { o >= $0.offset && o < $0.end }) {
                    patches[i].bytes[Int(o - patches[i].offset)] ^= 0xFF
                } else {
                    patches.append(PatchedSource.Patch(offset: o, bytes: [try volume.read(at: o, count: 1)[0] ^ 0xFF]))
                }
            }
            let placedAt = start + f.partitionShift
            diskSize += f.diskGrowth
            if f.partitionShift > 0 { diskSize = max(diskSize, ComposedDisk.defaultDiskSize(partitionOffset: placedAt * sector, volumeSize: volume.size)) }
            return .init(kind: "volume", diskSize: diskSize, partitionStartLBA: placedAt, mbrHex: sector0.hex, volumePatches: patches)
        }
    }

    /// MBR partition type for a file-system hint, when the source disk did not record one.
    public static func partitionType(forHint hint: String) -> UInt8 {
        switch hint.lowercased() {
        case "fat32", "vfat": return 0x0C
        case "fat16", "fat": return 0x0E
        case "ntfs", "exfat": return 0x07
        default: return 0x83
        }
    }

    /// The composed disk described by `composition` over `volume` (the backup reader).
    public static func compose(volume: any BlockSource, composition c: PluginPointer.Composition) throws -> any BlockSource {
        switch c.kind {
        case "disk":
            guard c.diskSize == volume.size else {
                throw FormatError("plugin file", "composition", at: 0, "disk size \(c.diskSize) differs from the backup's \(volume.size)")
            }
            return volume
        case "volume":
            guard let start = c.partitionStartLBA, let hex = c.mbrHex, let mbr = [UInt8](hex: hex), mbr.count == 512 else {
                throw FormatError("plugin file", "composition", at: 0, "volume composition lacks its partition start or MBR")
            }
            let patched = c.volumePatches.isEmpty ? volume : try PatchedSource(base: volume, patches: c.volumePatches)
            return try ComposedDisk(mbr: mbr, volume: patched, partitionOffset: start * 512, diskSize: c.diskSize)
        default:
            throw FormatError("plugin file", "composition", at: 0, "unknown composition kind '\(c.kind)'")
        }
    }
}
