import BlockCore

extension GPT {
    /// Entries in the array a writer makes by default: 128 of 128 bytes, the 16 KiB §5.3.1 asks
    /// for ("A minimum of 16,384 bytes of space must be reserved for the GPT Partition Entry
    /// Array"), and what sgdisk and sfdisk write.
    public static let defaultEntryCount = 128
    public static let defaultEntrySize = 128

    /// The layout every partitioning tool makes for a disk of `diskSize` bytes: protective MBR at
    /// LBA 0, primary header at LBA 1, primary array from LBA 2, usable space, backup array,
    /// backup header at the last LBA. Throws `.invalidLayout` (or the partition rule broken) when
    /// the partitions do not fit it.
    public static func standard(diskSize: UInt64, sectorSize: Int, diskGUID: GUID, partitions: [Partition],
                                entryCount: Int = defaultEntryCount, entrySize: Int = defaultEntrySize) throws -> GPT {
        guard isSupportedSectorSize(sectorSize) else {
            throw GPTError(.invalidLayout, "disk", at: 0, "logical block size \(sectorSize) is not a power of two in 512...4096")
        }
        guard diskSize % UInt64(sectorSize) == 0 else {
            throw GPTError(.invalidLayout, "disk", at: 0, "disk size \(diskSize) is not a multiple of the \(sectorSize)-byte block")
        }
        guard entrySize >= 128, UInt32(clamping: entrySize) <= GPTHeader.maxEntrySize, entrySize.nonzeroBitCount == 1 else {
            throw GPTError(.entrySize, "header", at: UInt64(sectorSize) + 84, "entry size \(entrySize) is not 128 × 2^n")
        }
        guard entryCount >= 1, UInt64(entryCount) * UInt64(entrySize) <= GPTHeader.maxEntryArrayBytes else {
            throw GPTError(.entryCount, "header", at: UInt64(sectorSize) + 80, "\(entryCount) entries outside 1...\(GPTHeader.maxEntryArrayBytes / UInt64(entrySize))")
        }
        let sectors = diskSize / UInt64(sectorSize)
        let arraySectors = (UInt64(entryCount * entrySize) + UInt64(sectorSize) - 1) / UInt64(sectorSize)
        guard sectors >= 2 * arraySectors + 4 else {
            throw GPTError(.invalidLayout, "disk", at: 0, "\(sectors) blocks cannot hold two headers, two \(arraySectors)-block arrays and a usable block")
        }
        let g = GPT(sectorSize: sectorSize, diskSectors: sectors, diskGUID: diskGUID,
                    firstUsableLBA: 2 + arraySectors, lastUsableLBA: sectors - 2 - arraySectors,
                    primaryEntryLBA: 2, backupEntryLBA: sectors - 1 - arraySectors,
                    entryCount: entryCount, entrySize: entrySize, partitions: partitions.sorted { $0.number < $1.number })
        try g.validate()
        return g
    }

    /// The rules a table to be written must follow (the reader's, applied before writing).
    public func validate() throws {
        for p in partitions where p.name.utf16.count > GPT.nameUnits {
            throw GPTError(.invalidLayout, "partition entry \(p.number)", at: 0, "name '\(p.name)' is longer than \(GPT.nameUnits) UTF-16 code units")
        }
        for p in partitions where p.typeGUID.isZero {
            throw GPTError(.invalidLayout, "partition entry \(p.number)", at: 0, "a zero type GUID marks an unused entry")
        }
        try checkPartitions(arrayBase: primaryEntryLBA * UInt64(sectorSize))
    }

    /// Table 5-4: one record, OSType 0xEE, StartingLBA 1, SizeInLBA "the size of the disk minus
    /// one" or 0xFFFFFFFF when that does not fit; boot code and disk signature "unused by UEFI"
    /// and zero. BootIndicator 0x00 ("must be set to 0x00 to indicate a non-bootable partition").
    public func protectiveMBR() -> MBR {
        let size = UInt32(clamping: diskSectors - 1)
        return MBR(diskSignature: 0, partitions: [MBR.Partition(type: 0xEE, bootable: false, startLBA: 1, sectorCount: size)])
    }

    /// The entry array as stored (both copies are identical).
    public func encodeEntryArray() -> [UInt8] { GPTEntryArray.encode(partitions, count: entryCount, size: entrySize) }

    /// The primary (LBA 1) or backup (last LBA) header.
    public func header(backup: Bool, entryArrayCRC: UInt32 = 0) -> GPTHeader {
        GPTHeader(myLBA: backup ? diskSectors - 1 : 1, alternateLBA: backup ? 1 : diskSectors - 1,
                  firstUsableLBA: firstUsableLBA, lastUsableLBA: lastUsableLBA, diskGUID: diskGUID,
                  partitionEntryLBA: backup ? backupEntryLBA : primaryEntryLBA,
                  entryCount: UInt32(entryCount), entrySize: UInt32(entrySize), entryArrayCRC: entryArrayCRC)
    }

    /// Byte range of the primary structures: LBA 0 up to FirstUsableLBA.
    public var primaryArea: Range<UInt64> { 0..<(firstUsableLBA * UInt64(sectorSize)) }
    /// Byte range of the backup structures: the backup array's first LBA to the end of the disk.
    public var backupArea: Range<UInt64> { (min(backupEntryLBA, diskSectors - 1) * UInt64(sectorSize))..<diskBytes }

    /// The bytes of `primaryArea`: protective MBR (sector 0, zero-padded to the block size),
    /// primary header, primary array, zeros up to FirstUsableLBA.
    public func encodePrimaryArea() -> [UInt8] {
        let ss = sectorSize
        let array = encodeEntryArray()
        var out = [UInt8](repeating: 0, count: Int(primaryArea.upperBound))
        out.put(protectiveMBR().encode(), at: 0)
        out.put(header(backup: false, entryArrayCRC: CRC32.checksum(array)).encode(sectorSize: ss), at: ss)
        out.put(array, at: Int(primaryEntryLBA) * ss)
        return out
    }

    /// The bytes of `backupArea`: backup array, zeros, backup header in the last block.
    public func encodeBackupArea() -> [UInt8] {
        let ss = UInt64(sectorSize)
        let array = encodeEntryArray()
        let start = backupArea.lowerBound
        var out = [UInt8](repeating: 0, count: Int(backupArea.upperBound - start))
        out.put(array, at: Int(backupEntryLBA * ss - start))
        out.put(header(backup: true, entryArrayCRC: CRC32.checksum(array)).encode(sectorSize: sectorSize), at: Int((diskSectors - 1) * ss - start))
        return out
    }

    /// Writes both copies of the table to `file` (a raw disk of `diskBytes` bytes); the usable
    /// space is left untouched.
    public func write(to file: RawFile) throws {
        try file.write(at: primaryArea.lowerBound, encodePrimaryArea())
        try file.write(at: backupArea.lowerBound, encodeBackupArea())
    }

    /// A deterministic GUID for a table or partition that has none recorded: SHA-256 of the
    /// owner's identity (a backup's image ID) and a label naming the role, shaped as a version-4
    /// GUID (`GUID.derived`). Labels: "gpt-disk", "gpt-partition-<number>".
    public static func derivedGUID(identity: [UInt8], role: String) -> GUID {
        GUID.derived(seed: identity, label: role)
    }
}
