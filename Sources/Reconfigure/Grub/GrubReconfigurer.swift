import BlockCore
import DiskFormats
import Foundation

/// The GRUB step of a reconfiguration session: a volume with `/boot/grub/grub.cfg` on a disk
/// whose boot gap lacks GRUB (a volume-only backup composed behind a generic MBR) gets GRUB boot
/// code built from the volume's own modules (`GrubBootCode`), written to LBA 0…N of the session's
/// overlay and so into the caller's layer. A disk that already boots GRUB is left alone, which
/// also makes a second run a no-op.
struct GrubReconfigurer {
    let session: OverlaySession
    var g: Guestfs { session.g }

    /// Returns true when some volume holds a GRUB configuration (whether or not it changed anything).
    func run(report: inout ReconfigurationReport, dryRun: Bool) throws -> Bool {
        let disk = session.device
        var found: (device: String, config: String)?
        for (dev, type) in try g.listFilesystems() where GrubBootCode.fileSystemModule[type] != nil {
            do { try g.mountReadOnly(dev) } catch { continue }
            defer { try? g.umountAll() }
            if let cfg = try BootConfig.grubPaths.first(where: { try g.isFile($0) }) {
                found = (dev, cfg)
                break
            }
        }
        guard let (device, config) = found else { return false }
        if report.bootLoader == nil {
            report.bootLoader = "grub"
            report.bootConfig = "\(device):\(config)"
        }
        let sector0 = try g.preadDevice(disk, count: MBR.size, at: 0)
        let mbr: MBR
        do { mbr = try MBR.parse(sector0) } catch {
            throw GrubError.partitionTable("\(disk) has no usable MBR for GRUB boot code: \(error)")
        }
        if mbr.isProtective {
            // GPT: GRUB's core lives in a BIOS boot partition we do not rebuild. A boot sector that
            // is GRUB's is taken as installed; anything else is refused.
            if GrubBootCode.contains(Array(sector0[0..<MBR.bootCodeSize]), Array("GRUB ".utf8)) { return true }
            // A UEFI disk (e.g. a volume exposed with a synthesized ESP, docs/uefi.md): the firmware
            // boots \EFI\BOOT\BOOTX64.EFI from the ESP; there is no BIOS boot code to make.
            if let esp = try uefiLoader() {
                report.bootLoader = "grub (UEFI: \\EFI\\BOOT\\BOOTX64.EFI on \(esp))"
                return true
            }
            throw GrubError.partitionTable("\(disk) is GPT-partitioned and has no GRUB boot sector; BIOS GRUB there needs a BIOS boot partition (not supported), and no FAT file system holds \\EFI\\BOOT\\BOOTX64.EFI for UEFI")
        }
        let installed = try GrubBootCode.isInstalled(sector0: sector0) { lba in
            try g.preadDevice(disk, count: MBR.size, at: lba * UInt64(MBR.size))
        }
        if installed { return true }

        guard device.hasPrefix(disk), let number = Int(device.dropFirst(disk.count)) else {
            throw GrubError.partitionTable("\(device) holds \(config) but is not a partition of \(disk) (whole-disk file systems have no boot gap)")
        }
        guard let entry = mbr.numberedPartitions.first(where: { $0.number == number })?.partition else {
            throw GrubError.partitionTable("\(device) is not a primary partition of \(disk)'s MBR (logical partitions are not supported)")
        }

        try g.mountReadOnly(device)
        let code: GrubBootCode
        do {
            defer { try? g.umountAll() }
            let work = URL(fileURLWithPath: session.temporaryPath("grub"))
            let files = GuestfsVolumeFiles(g: g, device: device, scratch: session.temporaryPath("grub-modules.tar"))
            code = try GrubBootCode.build(files: files, partitionStartLBA: UInt64(entry.startLBA), sector0: sector0,
                                          extraModules: [], work: work)
        }
        report.changes.append(.init(
            kind: "grub-boot-code", location: disk,
            detail: "boot.img at LBA 0 (partition table kept), core.img \(code.coreSectors) sectors at LBA 1–\(code.coreSectors) "
                + "from \(device):\(code.moduleDirectory); search.fs_uuid \(code.filesystemUUID), prefix \(code.prefix), config \(code.configPath)"))
        guard !dryRun else { return true }
        for p in code.patches { try g.pwriteDevice(disk, p.bytes, at: p.offset) }
        return true
    }

    /// The FAT file system holding the UEFI fallback loader, if any (path case-insensitive, as FAT is).
    private func uefiLoader() throws -> String? {
        for (dev, type) in try g.listFilesystems() where type == "vfat" {
            do { try g.mountReadOnly(dev) } catch { continue }
            defer { try? g.umountAll() }
            if let path = try? g.caseSensitivePath("/EFI/BOOT/BOOTX64.EFI"), (try? g.isFile(path)) == true { return dev }
        }
        return nil
    }
}
