import BlockCore

extension GPT {
    /// Reads and validates the GPT of `disk` with logical blocks of `sectorSize` bytes
    /// (UEFI 2.10 §5.3.2): the protective MBR, the primary header and array, the backup header
    /// and array, and their agreement.
    ///
    /// - primary valid, backup valid: they must describe the same table (`.backupMismatch`);
    /// - primary valid, backup damaged or misplaced: the primary is returned and `backupProblem`
    ///   says why (§5.3.2: software "must" check the backup and restore it, not refuse the disk);
    /// - primary damaged: the backup at the last LBA is used (`usedBackupHeader`), as §5.3.2
    ///   prescribes ("If the primary GPT is corrupt, software must check the last LBA of the device
    ///   to see if it has a valid GPT Header"); if it is damaged too, the primary's error is thrown.
    public static func read(from disk: some BlockSource, sectorSize: Int = 512) throws -> GPT {
        guard isSupportedSectorSize(sectorSize) else {
            throw GPTError(.invalidLayout, "disk", at: 0, "logical block size \(sectorSize) is not a power of two in 512...4096")
        }
        let ss = UInt64(sectorSize)
        let sectors = disk.size / ss
        // Smallest GPT disk: protective MBR, primary header, one array block, one usable block,
        // backup array block, backup header.
        guard sectors >= 6 else {
            throw GPTError(.truncated, "disk", at: 0, "\(disk.size) bytes is too small for a GPT with \(sectorSize)-byte blocks")
        }
        try checkProtectiveMBR(disk)
        let primary: GPT
        do {
            primary = try readOne(disk, lba: 1, sectors: sectors, sectorSize: sectorSize)
        } catch let primaryError as GPTError {
            guard var backup = try? readOne(disk, lba: sectors - 1, sectors: sectors, sectorSize: sectorSize) else { throw primaryError }
            backup.usedBackupHeader = true
            return backup
        }
        // The primary's AlternateLBA says where its twin is; §5.3.1: "the backup GPT Header must
        // be located in the last LBA of the device".
        let alternate = primary.header(backup: true).myLBA
        do {
            guard alternate == sectors - 1 else {
                throw GPTError(.headerLocation, "header", at: ss + 32,
                               "AlternateLBA \(alternate) is not the last LBA \(sectors - 1) (a disk grown after partitioning?)")
            }
            let backup = try readOne(disk, lba: alternate, sectors: sectors, sectorSize: sectorSize)
            try checkAgreement(primary: primary, backup: backup)
            // Only the backup header knows where its array is (usually just before it).
            var p = primary
            p.backupEntryLBA = backup.backupEntryLBA
            return p
        } catch let e as GPTError where e.kind != .backupMismatch {
            var p = primary
            p.backupProblem = e
            return p
        }
    }

    /// §5.2.3: "A Protective MBR may be located at LBA 0 […] it contains a partition record with
    /// an OSType set to 0xEE" (table 5-4: StartingLBA "Set to 0x00000001 (i.e., the LBA of the GPT
    /// Partition Header)"). Hybrid MBRs with more entries are accepted as long as that one exists.
    static func checkProtectiveMBR(_ disk: some BlockSource) throws {
        let mbr: MBR
        do { mbr = try MBR.parse(try disk.read(at: 0, count: 512)) } catch let e as FormatError {
            throw GPTError(.protectiveMBR, "protective MBR", at: e.offset, e.reason)
        }
        guard let ee = mbr.partitions.compactMap({ $0 }).first(where: { $0.type == 0xEE }) else {
            throw GPTError(.protectiveMBR, "protective MBR", at: UInt64(MBR.tableOffset), "no partition record of type 0xEE")
        }
        guard ee.startLBA == 1 else {
            throw GPTError(.protectiveMBR, "protective MBR", at: UInt64(MBR.tableOffset + 8), "the 0xEE record starts at LBA \(ee.startLBA), not 1")
        }
    }

    /// One header (primary at LBA 1 or backup at the last LBA) and its entry array.
    static func readOne(_ disk: some BlockSource, lba: UInt64, sectors: UInt64, sectorSize: Int) throws -> GPT {
        let ss = UInt64(sectorSize)
        let isPrimary = lba == 1
        let name = isPrimary ? "header" : "backup header"
        let base = lba * ss
        guard lba < sectors else { throw GPTError(.truncated, name, at: base, "LBA \(lba) is past the end of the disk (\(sectors) blocks)") }
        let h = try GPTHeader.parse(try disk.read(at: base, count: sectorSize), lba: lba, base: base, structure: name)

        // The twin's location. Primary: past the usable space, on the disk. Backup: LBA 1.
        if isPrimary {
            guard h.alternateLBA > h.lastUsableLBA, h.alternateLBA < sectors else {
                throw GPTError(.headerLocation, name, at: base + 32,
                               "AlternateLBA \(h.alternateLBA) is not after LastUsableLBA \(h.lastUsableLBA) on a disk of \(sectors) blocks")
            }
        } else {
            guard h.alternateLBA == 1 else {
                throw GPTError(.headerLocation, name, at: base + 32, "AlternateLBA \(h.alternateLBA) is not 1 (the primary header)")
            }
        }
        // Table 5-5, LastUsableLBA: a block of this disk, before the backup structures.
        guard h.lastUsableLBA < sectors - 1 else {
            throw GPTError(.usableRange, name, at: base + 48, "LastUsableLBA \(h.lastUsableLBA) is not before the last LBA \(sectors - 1)")
        }
        // §5.3.1: "The primary GPT Partition Entry Array must be located after the primary GPT
        // Header and end before the FirstUsableLBA. The backup GPT Partition Entry Array must be
        // located after the LastUsableLBA and end before the backup GPT Header."
        let arraySectors = (h.entryArrayBytes + ss - 1) / ss
        let (arrayEnd, overflow) = h.partitionEntryLBA.addingReportingOverflow(arraySectors)
        // (The backup header cannot see the primary array, but its FirstUsableLBA must still
        // leave room for the primary header and an array of the same size.)
        let placed = isPrimary
            ? h.partitionEntryLBA > lba && arrayEnd <= h.firstUsableLBA
            : h.partitionEntryLBA > h.lastUsableLBA && arrayEnd <= lba && h.firstUsableLBA >= 2 + arraySectors
        guard !overflow, placed else {
            let rule = isPrimary ? "after the header (LBA 1) and end by FirstUsableLBA \(h.firstUsableLBA)"
                                 : "after LastUsableLBA \(h.lastUsableLBA) and end by the backup header (LBA \(lba))"
            throw GPTError(.entryArrayLocation, name, at: base + 72,
                           "entry array at LBA \(h.partitionEntryLBA) (\(arraySectors) blocks) must start \(rule)")
        }
        // Bounded by GPTHeader.maxEntryArrayBytes (parse) and by the disk (placement): safe to read.
        let arrayBase = h.partitionEntryLBA * ss
        let array = try disk.read(at: arrayBase, count: Int(h.entryArrayBytes))
        // Table 5-5, PartitionEntryArrayCRC32: "computed over a byte length of
        // NumberOfPartitionEntries * SizeOfPartitionEntry" — §5.3.2: "Check the CRC of the GUID
        // Partition Entry Array".
        let crc = CRC32.checksum(array)
        guard crc == h.entryArrayCRC else {
            throw GPTError(.entryArrayCRC, isPrimary ? "partition entry array" : "backup partition entry array", at: arrayBase,
                           "CRC-32 mismatch (header \(name) says 0x\(hex32(h.entryArrayCRC)), computed 0x\(hex32(crc)))")
        }
        let parts = try GPTEntryArray.decode(array, count: Int(h.entryCount), size: Int(h.entrySize), base: arrayBase)
        let primaryEntryLBA = isPrimary ? h.partitionEntryLBA : 2
        // The primary cannot know where the backup array is: assume the standard place (just
        // before the backup header) until the backup header is read (`read` then corrects it).
        let backupEntryLBA = isPrimary ? h.alternateLBA - arraySectors : h.partitionEntryLBA
        let gpt = GPT(sectorSize: sectorSize, diskSectors: isPrimary ? h.alternateLBA + 1 : lba + 1, diskGUID: h.diskGUID,
                      firstUsableLBA: h.firstUsableLBA, lastUsableLBA: h.lastUsableLBA,
                      primaryEntryLBA: primaryEntryLBA, backupEntryLBA: backupEntryLBA,
                      entryCount: Int(h.entryCount), entrySize: Int(h.entrySize), partitions: parts)
        try gpt.checkPartitions(arrayBase: arrayBase)
        return gpt
    }

    /// §5.3.2 has the backup header describe the same table as the primary: only MyLBA,
    /// AlternateLBA, PartitionEntryLBA and the header CRC differ (gdisk: "main and backup
    /// partition tables differ").
    static func checkAgreement(primary p: GPT, backup b: GPT) throws {
        let at = (b.diskSectors - 1) * UInt64(b.sectorSize)
        func mismatch(_ field: Int, _ what: String) -> GPTError {
            GPTError(.backupMismatch, "backup header", at: at + UInt64(field), "\(what) differs from the primary header's")
        }
        if p.diskGUID != b.diskGUID { throw mismatch(56, "DiskGUID \(b.diskGUID)") }
        if p.firstUsableLBA != b.firstUsableLBA { throw mismatch(40, "FirstUsableLBA \(b.firstUsableLBA)") }
        if p.lastUsableLBA != b.lastUsableLBA { throw mismatch(48, "LastUsableLBA \(b.lastUsableLBA)") }
        if p.entryCount != b.entryCount { throw mismatch(80, "NumberOfPartitionEntries \(b.entryCount)") }
        if p.entrySize != b.entrySize { throw mismatch(84, "SizeOfPartitionEntry \(b.entrySize)") }
        if p.partitions != b.partitions { throw mismatch(88, "the partition entry array (PartitionEntryArrayCRC32)") }
    }
}
