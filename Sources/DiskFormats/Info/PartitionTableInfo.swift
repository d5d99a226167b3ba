import BlockCore

/// The `partition_table` field `bootlab info` adds for a disk image (raw or any registered
/// native format) whose virtual disk holds an MBR or a GPT: every partition with its type (and
/// type name), GUIDs, start, size, attributes and name. A protective MBR whose GPT does not read
/// is shown with the GPT's error, so a damaged table is visible rather than silently absent.
public enum PartitionTableInfo {
    public static func field(of disk: some BlockSource) -> InfoField? {
        guard disk.size >= 512, let sector0 = try? disk.read(at: 0, count: 512), let mbr = try? MBR.parse(sector0) else { return nil }
        let table: PartitionTable
        do { table = try PartitionTable.read(from: disk) } catch {
            guard mbr.isProtective else { return nil }
            return InfoField("partition_table", .object([InfoField("scheme", .string("gpt")), InfoField("error", .string("\(error)"))]))
        }
        if let g = table.gpt { return InfoField("partition_table", .object(fields(of: g))) }
        guard !table.entries.isEmpty else { return nil }
        var f = [InfoField("scheme", .string("mbr")), InfoField("disk_signature", .string("0x" + hex32(mbr.diskSignature)))]
        var parts: [InfoField] = []
        for (n, p) in mbr.numberedPartitions {
            parts.append(InfoField(String(n), .object([
                InfoField("type", .string("0x" + String(p.type, radix: 16))), InfoField("bootable", .bool(p.bootable)),
                InfoField("start_lba", .integer(UInt64(p.startLBA))), InfoField("sectors", .integer(UInt64(p.sectorCount))),
                InfoField("size", .bytes(UInt64(p.sectorCount) * 512)),
            ])))
        }
        f.append(InfoField("partitions", .object(parts)))
        return InfoField("partition_table", .object(f))
    }

    static func fields(of g: GPT) -> [InfoField] {
        var f: [InfoField] = [
            InfoField("scheme", .string("gpt")),
            InfoField("sector_size", .integer(UInt64(g.sectorSize))),
            InfoField("disk_guid", .string(g.diskGUID.description)),
            InfoField("first_usable_lba", .integer(g.firstUsableLBA)),
            InfoField("last_usable_lba", .integer(g.lastUsableLBA)),
            InfoField("entries", .integer(UInt64(g.entryCount))),
            InfoField("entry_size", .integer(UInt64(g.entrySize))),
        ]
        if g.usedBackupHeader { f.append(InfoField("used_backup_header", .bool(true))) }
        if let p = g.backupProblem { f.append(InfoField("backup_problem", .string(p.description))) }
        let parts = g.partitions.map { p in
            InfoField(String(p.number), .object([
                InfoField("type", .string(p.typeGUID.description)), InfoField("type_name", .string(p.typeName)),
                InfoField("unique_guid", .string(p.uniqueGUID.description)),
                InfoField("start_lba", .integer(p.firstLBA)), InfoField("last_lba", .integer(p.lastLBA)),
                InfoField("size", .bytes(p.sectorCount * UInt64(g.sectorSize))),
                InfoField("attributes", .string("0x" + String(p.attributes, radix: 16))),
                InfoField("name", .string(p.name)),
            ]))
        }
        f.append(InfoField("partitions", .object(parts)))
        return f
    }
}
