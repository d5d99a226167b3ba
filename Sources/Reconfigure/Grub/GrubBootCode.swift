import BlockCore
import DiskFormats
import Foundation
import Processes

/// Bytes to place at one offset of the composed disk (in its reconfiguration layer).
public struct BootCodePatch: Sendable, Equatable {
    public var offset: UInt64
    public var bytes: [UInt8]
    public init(offset: UInt64, bytes: [UInt8]) {
        self.offset = offset
        self.bytes = bytes
    }
    public var range: Range<UInt64> { offset..<offset + UInt64(bytes.count) }
}

public enum GrubError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The volume holds no `/boot/grub/grub.cfg` (or `/grub/grub.cfg`).
    case noGrubConfiguration(String)
    /// Something the core image needs is missing or unreadable on the volume.
    case volume(String)
    /// The core image is larger than the gap before the first partition.
    case doesNotFit(coreSectors: Int, gapSectors: UInt64, firstPartitionLBA: UInt64)
    /// The composed disk's sector 0 does not describe the volume.
    case partitionTable(String)
    /// grub-mkimage produced something this code does not recognize; nothing is written.
    case unexpectedImage(String)

    public var description: String {
        switch self {
        case .noGrubConfiguration(let s): return "GRUB: no grub.cfg on \(s)"
        case .volume(let s): return "GRUB: \(s)"
        case .doesNotFit(let core, let gap, let lba):
            return "GRUB: core.img needs \(core) sectors after the MBR but the first partition starts at LBA \(lba) (\(gap) free sectors); refusing to overwrite partition data"
        case .partitionTable(let s): return "GRUB: \(s)"
        case .unexpectedImage(let s): return "GRUB: \(s)"
        }
    }
}

/// GRUB (i386-pc, BIOS) boot code for a composed disk whose GRUB-booted volume came from a
/// volume-only backup: the original core image lived in the gap between the MBR and the first
/// partition, which such a backup never saved.
///
/// Regeneration writes bytes only (platform-notes, "GRUB boot code can be regenerated"):
/// - LBA 0: the volume's own `boot.img[0..<440]` with the boot-drive check at 0x66 replaced by two
///   NOPs (the one change grub-bios-setup makes for a hard disk) and `kernel_sector` (0x5C) = 1;
///   bytes 440–511 (disk signature, partition table, 55AA) are the composed disk's.
/// - LBA 1…N: `core.img` from `grub-mkimage`, built from the volume's **own** modules, unchanged
///   (grub-mkimage already points diskboot's blocklist at LBA 2, N−1 sectors).
///
/// The core image holds `biosdisk part_msdos <fs> search_fs_uuid` and a small embedded config
/// (run by GRUB's rescue parser: one command per line) that finds the volume by its file-system
/// UUID, sets the prefix to the directory holding the volume's modules and, when that is not the
/// grub.cfg directory (a debootstrapped system that never ran grub-install keeps its modules in
/// `/usr/lib/grub/i386-pc` only), enters normal mode on the grub.cfg explicitly.
public struct GrubBootCode: Sendable, Equatable {
    /// LBA 0 (512 bytes), then core.img at LBA 1.
    public var patches: [BootCodePatch]
    public var coreSectors: Int
    /// The partition (1-based, msdos numbering) that holds the volume.
    public var partitionNumber: Int
    public var filesystemUUID: String
    /// grub.cfg on the volume, e.g. `/boot/grub/grub.cfg`.
    public var configPath: String
    /// The volume's module directory the core image was built from (and that GRUB loads from).
    public var moduleDirectory: String
    /// The core image's built-in prefix (used when the UUID search fails).
    public var prefix: String
    public var embeddedConfig: String
    public var modules: [String]

    /// Where GRUB 2's i386-pc boot.img keeps the fields grub-bios-setup edits (grub/boot/i386/pc/boot.S).
    static let kernelSectorOffset = 0x5C
    static let bootDriveCheckOffset = 0x66
    /// diskboot.img's first blocklist entry: start LBA (u64), length (u16), segment (u16).
    static let blocklistStartOffset = 0x1F4
    static let blocklistLengthOffset = 0x1FC

    /// Builds boot code from a raw volume image (ext2/3/4; read with debugfs and blkid, never mounted).
    ///
    /// - `partitionStartLBA`: where the composed disk places the volume; `sector0` (the composed
    ///   disk's 512-byte MBR) must have a primary entry starting there. Its bytes 440–511 are kept.
    /// - `extraModules`: more modules to build into the core image (larger core).
    /// Throws `GrubError.doesNotFit` when the core image does not fit before the first partition.
    public static func regenerate(volumePath: String, partitionStartLBA: UInt64, sector0: [UInt8],
                                  extraModules: [String] = [], workDirectory: URL? = nil) throws -> GrubBootCode {
        try withScratch(workDirectory) { work in
            try build(files: RawVolumeFiles(path: volumePath), partitionStartLBA: partitionStartLBA,
                      sector0: sector0, extraModules: extraModules, work: work)
        }
    }

    /// The same from any block source holding the volume: a `RawFile` is read in place; anything
    /// else is first copied (data extents only, sparse) to a scratch file for debugfs.
    public static func regenerate(volume: BlockSource, partitionStartLBA: UInt64, sector0: [UInt8],
                                  extraModules: [String] = [], workDirectory: URL? = nil) throws -> GrubBootCode {
        if let raw = volume as? RawFile {
            return try regenerate(volumePath: raw.path, partitionStartLBA: partitionStartLBA, sector0: sector0,
                                  extraModules: extraModules, workDirectory: workDirectory)
        }
        return try withScratch(workDirectory) { work in
            let copy = work.appendingPathComponent("volume.raw").path
            let out = try RawFile.create(path: copy, size: volume.size)
            for e in try volume.allExtents() where e.kind == .data {
                var off = e.offset
                while off < e.end {
                    let n = Int(min(e.end - off, 4 << 20))
                    try out.write(at: off, try volume.read(at: off, count: n))
                    off += UInt64(n)
                }
            }
            try out.flush()
            return try build(files: RawVolumeFiles(path: copy), partitionStartLBA: partitionStartLBA,
                             sector0: sector0, extraModules: extraModules, work: work)
        }
    }

    /// Writes the patches into `layer` (e.g. a reconfiguration layer the size of the composed disk).
    public func apply(to layer: WritableBlockSource) throws {
        for p in patches {
            guard p.range.upperBound <= layer.size else {
                throw GrubError.partitionTable("patch \(p.range) is past the end of a \(layer.size)-byte layer")
            }
            try p.bytes.withUnsafeBytes { try layer.write(at: p.offset, from: $0) }
        }
        try layer.flush()
    }

    /// True when `sector0` holds GRUB's boot.img and the sector it loads (`kernel_sector`) holds
    /// GRUB's diskboot.img. `readSector(lba)` reads one 512-byte sector of the same disk; it is only
    /// asked for an LBA inside the boot gap.
    public static func isInstalled(sector0: [UInt8], readSector: (UInt64) throws -> [UInt8]) throws -> Bool {
        guard sector0.count >= MBR.size,
              contains(Array(sector0[0..<MBR.bootCodeSize]), Array("GRUB ".utf8)) else { return false }
        let kernelSector = sector0.le64(kernelSectorOffset)
        // Only a core inside the boot gap counts (and only such an LBA is read).
        let gapEnd = (try? MBR.parse(sector0))?.firstPartitionLBA ?? 0
        guard kernelSector >= 1, kernelSector < gapEnd else { return false }
        // diskboot.S's message; every GRUB 2 release carries it.
        return contains(try readSector(kernelSector), Array("loading".utf8))
    }

    // MARK: building

    static func build(files: GrubVolumeFiles, partitionStartLBA: UInt64, sector0: [UInt8],
                      extraModules: [String], work: URL) throws -> GrubBootCode {
        let mbr: MBR
        do { mbr = try MBR.parse(sector0) } catch {
            throw GrubError.partitionTable("sector 0 of the composed disk is not a usable MBR: \(error)")
        }
        guard let entry = mbr.partition(startingAt: partitionStartLBA) else {
            throw GrubError.partitionTable("no primary partition starts at LBA \(partitionStartLBA) (entries start at \(mbr.numberedPartitions.map { UInt64($0.partition.startLBA) }))")
        }
        guard let config = try BootConfig.grubPaths.first(where: { try files.isFile($0) }) else {
            throw GrubError.noGrubConfiguration("\(files.name) (looked for \(BootConfig.grubPaths.joined(separator: ", ")))")
        }
        let grubDir = (config as NSString).deletingLastPathComponent
        // grub-install copies the modules next to grub.cfg; a system that never ran it (or a
        // chroot build) has them only where grub-pc-bin put them.
        let candidates = [grubDir + "/i386-pc", "/usr/lib/grub/i386-pc"]
        guard let moduleDir = try candidates.first(where: { d in
            try ["kernel.img", "boot.img", "normal.mod"].allSatisfy { try files.isFile("\(d)/\($0)") }
        }) else {
            throw GrubError.volume("no GRUB i386-pc modules (kernel.img, boot.img, normal.mod) on \(files.name) in \(candidates.joined(separator: " or "))")
        }
        let type = try files.filesystemType()
        guard let fsModule = fileSystemModule[type] else {
            throw GrubError.volume("\(files.name) is \(type.isEmpty ? "of unknown type" : type); GRUB boot code is built for \(fileSystemModule.keys.sorted().joined(separator: ", "))")
        }
        let uuid = try files.filesystemUUID()
        guard !uuid.isEmpty, uuid.allSatisfy({ $0.isHexDigit || $0 == "-" }) else {
            throw GrubError.volume("\(files.name) has no usable file-system UUID ('\(uuid)')")
        }

        let modsDir = work.appendingPathComponent("i386-pc")
        try files.copyDirectory(moduleDir, to: modsDir)
        let modules = ["biosdisk", "part_msdos", fsModule, "search_fs_uuid"] + extraModules.filter { !["biosdisk", "part_msdos", fsModule, "search_fs_uuid"].contains($0) }
        for m in modules where !FileManager.default.fileExists(atPath: modsDir.appendingPathComponent("\(m).mod").path) {
            throw GrubError.volume("\(files.name):\(moduleDir) has no \(m).mod")
        }
        let bootImg = [UInt8](try Data(contentsOf: modsDir.appendingPathComponent("boot.img")))
        guard bootImg.count == MBR.size, bootImg[510] == 0x55, bootImg[511] == 0xAA,
              bootImg[bootDriveCheckOffset] == 0xEB || bootImg[bootDriveCheckOffset] == 0x90 else {
            throw GrubError.unexpectedImage("\(files.name):\(moduleDir)/boot.img is not a GRUB 2 i386-pc boot.img (\(bootImg.count) bytes)")
        }

        let moduleParent = (moduleDir as NSString).deletingLastPathComponent
        let drive = "hd0,msdos\(entry.number)"
        var cfg = "search.fs_uuid \(uuid) root \(drive)\nset prefix=($root)\(moduleParent)\n"
        if moduleParent != grubDir {
            cfg += "insmod normal\nnormal ($root)\(config)\n"
        }
        let cfgPath = work.appendingPathComponent("load.cfg")
        try Data(cfg.utf8).write(to: cfgPath)
        let corePath = work.appendingPathComponent("core.img")
        let prefix = "(\(drive))\(moduleParent)"
        try Command(["grub-mkimage", "-O", "i386-pc", "-d", modsDir.path, "-c", cfgPath.path, "-p", prefix,
                     "-o", corePath.path] + modules).run()
        var core = [UInt8](try Data(contentsOf: corePath))
        guard core.count > MBR.size else { throw GrubError.unexpectedImage("grub-mkimage wrote \(core.count) bytes") }
        core += [UInt8](repeating: 0, count: (MBR.size - core.count % MBR.size) % MBR.size)
        let sectors = core.count / MBR.size
        let firstLBA = mbr.firstPartitionLBA ?? 0
        guard UInt64(1 + sectors) <= firstLBA else {
            throw GrubError.doesNotFit(coreSectors: sectors, gapSectors: firstLBA > 0 ? firstLBA - 1 : 0, firstPartitionLBA: firstLBA)
        }
        // The core is written unmodified, so diskboot's blocklist must already say "LBA 2, N−1 sectors".
        let blStart = core.le64(blocklistStartOffset), blLength = UInt64(core.le16(blocklistLengthOffset))
        guard blStart == 2, blLength == UInt64(sectors - 1) else {
            throw GrubError.unexpectedImage("core.img's blocklist says LBA \(blStart), \(blLength) sectors; expected LBA 2, \(sectors - 1)")
        }

        // Only the boot code is GRUB's; the disk signature, table and 0x55AA stay byte for byte
        // as they are (not re-encoded from the parsed MBR, whose CHS fields are recomputed).
        var lba0 = Array(bootImg[0..<MBR.bootCodeSize]) + Array(sector0[MBR.bootCodeSize..<MBR.size])
        lba0.putLE64(1, at: kernelSectorOffset)
        lba0[bootDriveCheckOffset] = 0x90
        lba0[bootDriveCheckOffset + 1] = 0x90
        return GrubBootCode(
            patches: [BootCodePatch(offset: 0, bytes: lba0), BootCodePatch(offset: UInt64(MBR.size), bytes: core)],
            coreSectors: sectors, partitionNumber: entry.number, filesystemUUID: uuid, configPath: config,
            moduleDirectory: moduleDir, prefix: prefix, embeddedConfig: cfg, modules: modules)
    }

    /// GRUB's file-system module per file-system type name.
    static let fileSystemModule = ["ext2": "ext2", "ext3": "ext2", "ext4": "ext2", "xfs": "xfs", "btrfs": "btrfs", "vfat": "fat"]

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count else { return false }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if Array(haystack[i..<i + needle.count]) == needle { return true }
        }
        return false
    }

    static func withScratch<R>(_ base: URL?, _ body: (URL) throws -> R) throws -> R {
        let dir = (base ?? FileManager.default.temporaryDirectory)
            .appendingPathComponent("bootlab-grub-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        return try body(dir)
    }
}
