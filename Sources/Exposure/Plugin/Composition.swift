import BackupImage
import BlockCore
import DiskFormats

/// Turns a backup into the disk the hypervisor should see: whole-disk backups pass through
/// unchanged; volume-only backups get a synthesized partition table — a GPT for volumes backed up
/// from a GPT disk or with 4096-byte sectors, an MBR otherwise or when asked — the volume at its
/// (original or chosen) partition start, boot-sector patches where it moved, and zero gap and tail.
public enum DiskComposer {
    /// syslinux's generic MBR boot code (Debian's syslinux-common).
    public static let defaultBootCodePath = "/usr/lib/syslinux/mbr/mbr.bin"
    /// Where a volume goes when the backup does not say where it was.
    public static let defaultPartitionStartLBA: UInt64 = 2048

    /// Which partition table a volume-only backup is composed with.
    public enum PartitionTableChoice: String, Sendable, CaseIterable {
        /// GPT when the volume came from a GPT disk or has 4096-byte sectors, else MBR.
        case auto
        case mbr
        case gpt
    }

    public struct Options: Sendable {
        public var partitionStartLBA: UInt64?
        public var partitionTable: PartitionTableChoice = .auto
        /// 440 bytes of MBR boot code; nil reads `defaultBootCodePath`.
        public var bootCode: [UInt8]?
        /// Deliberate corruption for lab fault tests (`mbr-byte`): empty unless the caller passes
        /// a plan (`bootlab expose --inject-fault`, the lab's expose step).
        public var faults: FaultPlan = .none
        /// Add a synthesized EFI System Partition holding these files (docs/uefi.md); implies a
        /// GPT. `espDirectory` is the sidecar's name beside the plugin (`PluginFile.expose` sets it).
        public var esp: SynthesizedESP.Request?
        public var espDirectory = "plugin.esp"
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
            if options.partitionTable != .auto {
                throw CompositionError.unsupported("--partition-table applies to volume backups; this backup holds a whole disk")
            }
            if options.partitionStartLBA != nil {
                throw CompositionError.unsupported("--partition-start applies to volume backups; this backup holds a whole disk")
            }
            if options.esp != nil {
                throw CompositionError.unsupported("--esp applies to volume backups; this backup holds a whole disk (its own ESP, if any, is served as it is)")
            }
            var disk = PluginPointer.Composition(kind: "disk", diskSize: volume.size)
            // A 4Kn disk (its backup recorded 4096-byte sectors): served as it is, but the native
            // view must say so — VHDX advertises it, 512-byte-sector formats refuse it.
            if header.logicalSectorSize != 0 && header.logicalSectorSize != 512 {
                guard volume.size % UInt64(header.logicalSectorSize) == 0 else {
                    throw CompositionError.unsupported("a disk of \(volume.size) bytes is not a whole number of its \(header.logicalSectorSize)-byte sectors")
                }
                disk.diskSectorSize = Int(header.logicalSectorSize)
            }
            return disk
        case .volume:
            let sectorSize = header.logicalSectorSize == 0 ? 512 : Int(header.logicalSectorSize)
            let table = options.partitionTable != .auto ? options.partitionTable
                : (header.partitionScheme == .gpt || sectorSize != 512 || options.esp != nil ? .gpt : .mbr)
            if options.esp != nil, table != .gpt {
                throw CompositionError.unsupported("a synthesized ESP needs a GPT composition (--partition-table gpt or auto)")
            }
            if table == .gpt { return try planGPT(header: header, volume: volume, options: options, sectorSize: sectorSize) }
            let sector = UInt64(512)
            guard sectorSize == 512 else {
                throw CompositionError.unsupported("an MBR composition needs 512-byte sectors; this volume has \(sectorSize)-byte sectors (use --partition-table gpt)")
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

    /// A GPT around the volume (docs/formats/gpt.md, "Composition"): the original disk GUID,
    /// entry number, type and unique GUIDs, attributes and name when the backup recorded them,
    /// else GUIDs derived from the backup's image ID; the original start (or
    /// `--partition-start`, else 1 MiB); the original disk size when the volume still fits it.
    static func planGPT(header: BackupHeader, volume: any BlockSource, options: Options, sectorSize: Int) throws -> PluginPointer.Composition {
        guard GPT.isSupportedSectorSize(sectorSize) else {
            throw CompositionError.unsupported("logical sector size \(sectorSize) is not 512...4096")
        }
        let ss = UInt64(sectorSize)
        let identity = header.imageID.bytes
        let entryCount = header.gptEntryCount != 0 ? Int(header.gptEntryCount) : GPT.defaultEntryCount
        let entrySize = header.gptEntrySize != 0 ? Int(header.gptEntrySize) : GPT.defaultEntrySize
        let fromGPT = header.partitionScheme == .gpt
        let number = fromGPT && header.partitionNumber >= 1 && Int(header.partitionNumber) <= entryCount ? Int(header.partitionNumber) : 1
        let arraySectors = (UInt64(entryCount * entrySize) + ss - 1) / ss
        let firstUsable = 2 + arraySectors
        let original = header.partitionStartLBA
        let start = options.partitionStartLBA ?? (original != 0 ? original : (1 << 20) / ss)
        guard start >= firstUsable else {
            throw CompositionError.unsupported("partition start LBA \(start) is inside the GPT's own structures (first usable LBA \(firstUsable))")
        }
        let sectors = (volume.size + ss - 1) / ss
        guard sectors > 0 else { throw CompositionError.unsupported("the volume is empty") }
        let (end, overflow) = start.addingReportingOverflow(sectors)
        guard !overflow, end < (UInt64.max >> 1) / ss - arraySectors - 1 else {
            throw CompositionError.unsupported("partition start LBA \(start) is too large")
        }
        let esp = try options.esp.map { try planESP($0, identity: identity, sectorSize: sectorSize, firstUsable: firstUsable,
                                                      volume: start..<end, volumeNumber: number, entryCount: entryCount,
                                                      directory: options.espDirectory) }
        let lastUsed = max(end, esp.map { $0.entry.lastLBA + 1 } ?? 0)
        // Partition end, backup array, backup header.
        let minBytes = (lastUsed + arraySectors + 1) * ss
        var diskSize = (minBytes + 0xFFFFF) / 0x100000 * 0x100000
        if header.originalDiskSize >= minBytes, header.originalDiskSize % ss == 0 { diskSize = header.originalDiskSize }
        let diskGUID = fromGPT && !header.gptDiskGUID.isZero ? header.gptDiskGUID : GPT.derivedGUID(identity: identity, role: "gpt-disk")
        let unique = fromGPT && !header.gptPartitionGUID.isZero ? header.gptPartitionGUID
            : GPT.derivedGUID(identity: identity, role: "gpt-partition-\(number)")
        let type = fromGPT && !header.gptPartitionType.isZero ? header.gptPartitionType : GPTPartitionType.forFileSystemHint(header.fileSystemHint)
        let entry = GPT.Partition(number: number, typeGUID: type, uniqueGUID: unique, firstLBA: start, lastLBA: end - 1,
                                  attributes: fromGPT ? header.gptAttributes : 0, name: fromGPT ? header.gptPartitionName : "")
        let record = PluginPointer.Composition.GPTRecord(sectorSize: sectorSize, diskGUID: diskGUID, entryCount: entryCount, entrySize: entrySize,
                                                        partitions: [.init(entry: entry, content: PluginPointer.Composition.PartitionRecord.backupContent)] + (esp.map { [$0] } ?? []))
        do { _ = try record.table(diskSize: diskSize) } catch let e as GPTError {
            throw CompositionError.unsupported("the GPT would be invalid: \(e)")
        }
        let patches = try BootSectorPatch.patches(volume: volume, newStartLBA: start)
        return .init(kind: "gpt", diskSize: diskSize, partitionStartLBA: start, volumePatches: patches, gpt: record)
    }

    /// Where the synthesized ESP goes (docs/uefi.md): at the first 1 MiB boundary when it fits
    /// before the volume (where an installer puts it, and where the original ESP usually was),
    /// else at the first 1 MiB boundary after the volume. The lowest entry number the volume does
    /// not use; GUIDs and the FAT volume ID derive from the backup's image ID.
    static func planESP(_ request: SynthesizedESP.Request, identity: [UInt8], sectorSize: Int, firstUsable: UInt64,
                        volume: Range<UInt64>, volumeNumber: Int, entryCount: Int,
                        directory: String) throws -> PluginPointer.Composition.PartitionRecord {
        let ss = UInt64(sectorSize)
        let size = request.size ?? SynthesizedESP.defaultSize(sectorSize: sectorSize)
        guard size % ss == 0, size >= FAT32Image.minimumSize(sectorSize: sectorSize) else {
            throw CompositionError.unsupported("an ESP of \(size) bytes is not a multiple of \(ss) or below FAT32's minimum (\(FAT32Image.minimumSize(sectorSize: sectorSize)) bytes)")
        }
        let sectors = size / ss
        let align = max(1, (1 << 20) / ss)
        func up(_ lba: UInt64) -> UInt64 { (lba + align - 1) / align * align }
        var first = up(firstUsable)
        if first + sectors > volume.lowerBound { first = up(volume.upperBound) }
        guard let number = (1...max(1, entryCount)).first(where: { $0 != volumeNumber }) else {
            throw CompositionError.unsupported("the GPT has no free entry for an ESP")
        }
        guard first <= UInt64(UInt32.max) else { throw CompositionError.unsupported("the ESP would start past LBA 2^32 (FAT's hidden sectors)") }
        let volumeID = GUID.derived(seed: identity, label: "esp-volume-id").bytes.le32(0)
        let files = request.files.map { ESPRecord.FileRecord(path: $0.path, size: UInt64($0.bytes.count), sha256: SHA256.hash($0.bytes).hex) }
        let record = ESPRecord(size: size, sectorSize: sectorSize, volumeID: volumeID, label: "EFI", hiddenSectors: UInt32(first),
                               directory: directory, files: files)
        // The FAT32 image must be writable with these files (fits, valid names) before expose records it.
        _ = try FAT32Image(options: record.fatOptions, files: request.files)
        let entry = GPT.Partition(number: number, typeGUID: GPTPartitionType.efiSystem,
                                  uniqueGUID: GPT.derivedGUID(identity: identity, role: "esp-partition"),
                                  firstLBA: first, lastLBA: first + sectors - 1, attributes: 0, name: SynthesizedESP.partitionName)
        var r = PluginPointer.Composition.PartitionRecord(entry: entry, content: SynthesizedESP.content)
        r.esp = record
        return r
    }

    /// A volume set's disk (docs/formats/gpt.md, "Several volumes of one disk"): the original
    /// GPT — disk GUID, sector size, entry shape, disk size — with one partition per member at
    /// its original start, with its original entry number, GUIDs, attributes and name, filled by
    /// that member (`content: "backup:<image ID>"`). The members' bytes are served unchanged (no
    /// boot-sector patch: nothing moved), so the composed disk equals the original disk wherever
    /// the original held a backed-up partition or its GPT.
    public static func planSet(_ manifest: BackupSetManifest, options: Options) throws -> PluginPointer.Composition {
        guard options.partitionStartLBA == nil else {
            throw CompositionError.unsupported("--partition-start applies to one volume; a volume set is composed at its original starts")
        }
        guard options.partitionTable != .mbr else {
            throw CompositionError.unsupported("a volume set is composed as its original GPT (--partition-table mbr does not apply)")
        }
        guard options.esp == nil else {
            throw CompositionError.unsupported("--esp with a volume set is not implemented (a set that holds the original ESP needs none)")
        }
        try manifest.validate()
        let partitions = manifest.volumes.sorted { $0.number < $1.number }.map { v in
            PluginPointer.Composition.PartitionRecord(
                entry: GPT.Partition(number: v.number, typeGUID: v.typeGUID, uniqueGUID: v.uniqueGUID, firstLBA: v.firstLBA,
                                     lastLBA: v.firstLBA + v.sectors(manifest.sectorSize) - 1, attributes: v.attributes, name: v.name),
                content: PluginPointer.BackupSetRecord.content(imageID: v.imageID.description))
        }
        let record = PluginPointer.Composition.GPTRecord(sectorSize: manifest.sectorSize, diskGUID: manifest.diskGUID,
                                                        entryCount: manifest.entryCount, entrySize: manifest.entrySize, partitions: partitions)
        do { _ = try record.table(diskSize: manifest.diskSize) } catch let e as GPTError {
            throw CompositionError.unsupported("the volume set's GPT would be invalid: \(e)")
        }
        return .init(kind: "gpt", diskSize: manifest.diskSize, gpt: record)
    }

    /// The bytes of one partition of a GPT composition: the backup's volume (patched), a volume
    /// set's member (`backup:<image ID>`, from `members`), or — for contents the composition
    /// layer synthesizes — the source that makes them.
    static func partitionContent(_ record: PluginPointer.Composition.PartitionRecord, volume: (any BlockSource)?,
                                 members: [String: any BlockSource], pluginDirectory: String?) throws -> any BlockSource {
        switch record.content {
        case PluginPointer.Composition.PartitionRecord.backupContent:
            guard let volume else {
                throw FormatError("plugin file", "composition", at: 0, "partition \(record.number): content 'backup' in a volume set's composition")
            }
            return volume
        case let c where c.hasPrefix("backup:"):
            guard let member = members[c] else {
                throw FormatError("plugin file", "composition", at: 0, "partition \(record.number): no volume set member for '\(c)'")
            }
            return member
        case SynthesizedESP.content:
            guard let esp = record.esp else {
                throw FormatError("plugin file", "composition", at: 0, "partition \(record.number): an ESP without its record")
            }
            return try SynthesizedESP.source(esp, pluginDirectory: pluginDirectory)
        default:
            throw FormatError("plugin file", "composition", at: 0, "partition \(record.number): unknown content '\(record.content)'")
        }
    }

    /// What an external source holds when the user did not say: a disk when sector 0 carries a
    /// partition table (boot signature, not a file system's boot sector, and at least one entry
    /// with a type, a start and a length), else a volume.
    public static func detectKind(_ source: any BlockSource) throws -> SourceKind {
        guard source.size >= 1024 else { return .volume }
        let s = try source.read(at: 0, count: 512)
        guard s[510] == 0x55, s[511] == 0xAA, fileSystemHint(sector0: s).isEmpty else { return .volume }
        for i in 0..<4 {
            let e = 446 + 16 * i
            let type = s[e + 4], start = s.le32(e + 8), count = s.le32(e + 12)
            if type != 0, start != 0, count != 0 { return .disk }
        }
        return .volume
    }

    /// The file system a volume's first sectors name (fat32, fat16, ntfs, exfat, ext), or "".
    public static func fileSystemHint(_ source: any BlockSource) -> String {
        guard source.size >= 2048, let head = try? source.read(at: 0, count: 2048) else { return "" }
        let hint = fileSystemHint(sector0: Array(head[0..<512]))
        if !hint.isEmpty { return hint }
        // ext2/3/4: superblock at 1024, magic 0xEF53 at offset 56 in it.
        return head[1024 + 56] == 0x53 && head[1024 + 57] == 0xEF ? "ext4" : ""
    }

    static func fileSystemHint(sector0 s: [UInt8]) -> String {
        func text(_ at: Int, _ n: Int) -> String { String(decoding: s[at..<(at + n)], as: UTF8.self) }
        if text(3, 8) == "NTFS    " { return "ntfs" }
        if text(3, 8) == "EXFAT   " { return "exfat" }
        if text(0x52, 8) == "FAT32   " { return "fat32" }
        if text(0x36, 5) == "FAT16" || text(0x36, 5) == "FAT12" { return "fat16" }
        return ""
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
    /// `pluginDirectory`: where a synthesized ESP's sidecar files are (nil: no ESP can be composed).
    /// `members`: a volume set's opened members by `content` string (`backup:<image ID>`); then
    /// `volume` is nil.
    public static func compose(volume: (any BlockSource)?, members: [String: any BlockSource] = [:],
                               composition c: PluginPointer.Composition,
                               pluginDirectory: String? = nil) throws -> any BlockSource {
        let needsOne = FormatError("plugin file", "composition", at: 0, "a '\(c.kind)' composition needs one backup, not a volume set")
        switch c.kind {
        case "disk":
            guard let volume else { throw needsOne }
            guard c.diskSize == volume.size else {
                throw FormatError("plugin file", "composition", at: 0, "disk size \(c.diskSize) differs from the backup's \(volume.size)")
            }
            return volume
        case "volume":
            guard let volume else { throw needsOne }
            guard let start = c.partitionStartLBA, let hex = c.mbrHex, let mbr = [UInt8](hex: hex), mbr.count == 512 else {
                throw FormatError("plugin file", "composition", at: 0, "volume composition lacks its partition start or MBR")
            }
            let patched = c.volumePatches.isEmpty ? volume : try PatchedSource(base: volume, patches: c.volumePatches)
            return try ComposedDisk(mbr: mbr, volume: patched, partitionOffset: start * 512, diskSize: c.diskSize)
        case "gpt":
            guard let g = c.gpt else {
                throw FormatError("plugin file", "composition", at: 0, "GPT composition lacks its table")
            }
            let patched: (any BlockSource)? = try volume.map { c.volumePatches.isEmpty ? $0 : try PatchedSource(base: $0, patches: c.volumePatches) }
            let parts = try g.partitions.map {
                ComposedPartition(entry: $0.entry, content: try partitionContent($0, volume: patched, members: members, pluginDirectory: pluginDirectory))
            }
            return try GPTComposedDisk(table: try g.table(diskSize: c.diskSize), partitions: parts)
        default:
            throw FormatError("plugin file", "composition", at: 0, "unknown composition kind '\(c.kind)'")
        }
    }
}
