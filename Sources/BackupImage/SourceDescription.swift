import BlockCore
import DiskFormats

/// What a backup source is, as recorded in the header's source-metadata fields.
struct SourceDescription {
    var source: any BlockSource
    var kind: SourceKind
    var scheme: PartitionScheme = .none
    var partitionNumber: UInt32 = 0
    var sectorSize: UInt32 = 512
    var diskSignature: UInt32 = 0
    var diskGUID: GUID = .zero
    var gptType: GUID = .zero
    var gptPartition: GUID = .zero
    var gptAttributes: UInt64 = 0
    var gptName = ""
    var gptEntryCount: UInt32 = 0
    var gptEntrySize: UInt32 = 0
    var mbrType: UInt8 = 0
    var bootable = false
    var startLBA: UInt64 = 0
    var partitionBytes: UInt64 = 0
    var diskBytes: UInt64 = 0
    var fsHint = ""

    /// `partition` selects one partition of a disk image; `kind` nil means auto-detect: a disk
    /// when a valid partition table with at least one partition is found and sector 0 is not a
    /// volume boot record (FAT/NTFS boot sectors also end in 0x55AA).
    static func describe(_ disk: any BlockSource, partition: Int?, kind: SourceKind?) throws -> SourceDescription {
        if let partition {
            let table = try PartitionTable.read(from: disk)
            guard let e = table.entry(number: partition) else {
                let have = table.entries.map { String($0.number) }.joined(separator: ", ")
                throw BackupImageError.invalidArgument("partition \(partition) not found in the \(table.scheme.rawValue.uppercased()) table (have: \(have.isEmpty ? "none" : have))")
            }
            let ss = UInt64(table.sectorSize)
            let vol = try PartitionSlice(disk, offset: e.startLBA * ss, length: e.sectorCount * ss)
            var d = SourceDescription(source: vol, kind: .volume)
            d.scheme = table.scheme == .mbr ? .mbr : .gpt
            d.partitionNumber = UInt32(partition)
            d.sectorSize = UInt32(table.sectorSize)
            d.diskSignature = table.diskSignature
            d.diskGUID = table.diskGUID ?? .zero
            d.gptType = e.gptType ?? .zero
            d.gptPartition = e.gptUniqueGUID ?? .zero
            if let g = table.gpt, let p = g.partition(number: partition) {
                d.gptAttributes = p.attributes
                d.gptName = p.name
                d.gptEntryCount = UInt32(g.entryCount)
                d.gptEntrySize = UInt32(g.entrySize)
            }
            d.mbrType = e.mbrType
            d.bootable = e.bootable
            d.startLBA = e.startLBA
            d.partitionBytes = vol.size
            d.diskBytes = disk.size
            d.fsHint = try detectFileSystem(vol)
            return d
        }
        let table = try? PartitionTable.read(from: disk)
        let first = disk.size >= 512 ? try disk.read(at: 0, count: 3) : []
        let looksLikeVBR = first.first == 0xEB || first.first == 0xE9
        let resolved = kind ?? ((table.map { !$0.entries.isEmpty } ?? false) && !looksLikeVBR ? .disk : .volume)
        var d = SourceDescription(source: disk, kind: resolved)
        if resolved == .disk {
            d.diskBytes = disk.size
            if let table {
                d.scheme = table.scheme == .mbr ? .mbr : .gpt
                d.sectorSize = UInt32(table.sectorSize)
                d.diskSignature = table.diskSignature
                d.diskGUID = table.diskGUID ?? .zero
            }
        } else {
            d.partitionBytes = disk.size
            d.fsHint = try detectFileSystem(disk)
        }
        return d
    }

    /// A short file-system name from well-known signatures, or "" when unknown.
    static func detectFileSystem(_ v: any BlockSource) throws -> String {
        guard v.size >= 2048 else { return "" }
        let b = try v.read(at: 0, count: 2048)
        if b.le16(1024 + 56) == 0xEF53 {
            let compat = b.le32(1024 + 92), incompat = b.le32(1024 + 96)
            if incompat & 0x40 != 0 || incompat & 0x200 != 0 { return "ext4" }
            return compat & 0x4 != 0 ? "ext3" : "ext2"
        }
        if Array(b[3..<11]) == Array("NTFS    ".utf8) { return "ntfs" }
        if Array(b[82..<87]) == Array("FAT32".utf8) { return "fat32" }
        if Array(b[54..<59]) == Array("FAT16".utf8) { return "fat16" }
        if Array(b[54..<59]) == Array("FAT12".utf8) { return "fat12" }
        if Array(b[3..<11]) == Array("EXFAT   ".utf8) { return "exfat" }
        return ""
    }
}
