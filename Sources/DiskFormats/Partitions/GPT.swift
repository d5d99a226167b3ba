import BlockCore

/// A GUID Partition Table (UEFI 2.10 §5.3): everything needed to read one from a disk
/// (`read`, in GPTReader.swift) and to write one (`GPT.standard` + the encoders in
/// GPTWriter.swift). The same value describes both: a table read from a disk re-encodes to the
/// same bytes (the round trip the tests check). Spec clauses are quoted beside the checks.
public struct GPT: Sendable, Hashable {
    /// One used entry of the partition entry array (table 5-6).
    public struct Partition: Sendable, Hashable {
        /// 1-based index in the entry array (what `--partition N`, Linux's sdaN and GRUB's gptN name).
        public var number: Int
        public var typeGUID: GUID
        public var uniqueGUID: GUID
        public var firstLBA: UInt64
        /// Inclusive, as stored (table 5-6, EndingLBA: "inclusive").
        public var lastLBA: UInt64
        public var attributes: UInt64
        /// At most 36 UTF-16 code units (table 5-6, PartitionName: 72 bytes).
        public var name: String

        public init(number: Int, typeGUID: GUID, uniqueGUID: GUID, firstLBA: UInt64, lastLBA: UInt64,
                    attributes: UInt64 = 0, name: String = "") {
            self.number = number
            self.typeGUID = typeGUID
            self.uniqueGUID = uniqueGUID
            self.firstLBA = firstLBA
            self.lastLBA = lastLBA
            self.attributes = attributes
            self.name = name
        }

        public var sectorCount: UInt64 { lastLBA - firstLBA + 1 }
        /// Table 5-8: bit 0 "Required Partition" (platform needs it to function).
        public var required: Bool { attributes & 1 != 0 }
        /// Table 5-8: bit 2 "Legacy BIOS Bootable".
        public var legacyBootable: Bool { attributes & 4 != 0 }
        public var typeName: String { GPTPartitionType.name(of: typeGUID) }
    }

    public static let signature = Array("EFI PART".utf8)
    /// PartitionName holds 36 UTF-16 code units (72 bytes at entry offset 56).
    public static let nameUnits = 36

    /// Logical block size in bytes (512 or 4096; any power of two 512...4096 is accepted).
    public var sectorSize: Int
    /// Logical blocks of the disk the table describes; the backup header is at `diskSectors - 1`.
    public var diskSectors: UInt64
    public var diskGUID: GUID
    public var firstUsableLBA: UInt64
    public var lastUsableLBA: UInt64
    /// PartitionEntryLBA of the primary header (2 on every disk we know of).
    public var primaryEntryLBA: UInt64
    /// PartitionEntryLBA of the backup header (after LastUsableLBA, before the backup header).
    public var backupEntryLBA: UInt64
    public var entryCount: Int
    public var entrySize: Int
    /// Used entries, by ascending number.
    public var partitions: [Partition]
    /// True when the primary header or array was damaged and the backup was used (§5.3.2).
    public var usedBackupHeader: Bool = false
    /// When the primary table is valid but the backup is damaged or misplaced: why. UEFI §5.3.2
    /// asks software to restore it, not to refuse the disk; `info` reports it.
    public var backupProblem: GPTError?

    public init(sectorSize: Int, diskSectors: UInt64, diskGUID: GUID, firstUsableLBA: UInt64, lastUsableLBA: UInt64,
                primaryEntryLBA: UInt64, backupEntryLBA: UInt64, entryCount: Int, entrySize: Int, partitions: [Partition]) {
        self.sectorSize = sectorSize
        self.diskSectors = diskSectors
        self.diskGUID = diskGUID
        self.firstUsableLBA = firstUsableLBA
        self.lastUsableLBA = lastUsableLBA
        self.primaryEntryLBA = primaryEntryLBA
        self.backupEntryLBA = backupEntryLBA
        self.entryCount = entryCount
        self.entrySize = entrySize
        self.partitions = partitions
    }

    public var diskBytes: UInt64 { diskSectors * UInt64(sectorSize) }
    public var entryArrayBytes: Int { entryCount * entrySize }
    /// Logical blocks the entry array occupies.
    public var entryArraySectors: UInt64 { (UInt64(entryArrayBytes) + UInt64(sectorSize) - 1) / UInt64(sectorSize) }

    public func partition(number: Int) -> Partition? { partitions.first { $0.number == number } }

    /// The sector sizes a GPT may be read or written with.
    public static func isSupportedSectorSize(_ s: Int) -> Bool { s >= 512 && s <= 4096 && s.nonzeroBitCount == 1 }
}
