import BlockCore

/// One fuzz input (a disk image) through the GPT reader with 512- and 4096-byte sectors and
/// through `PartitionTable.read`: any error is fine; a crash, hang or runaway allocation is not.
/// One invariant is checked: a table that reads cleanly re-encodes (`encodePrimaryArea`,
/// `encodeBackupArea`) to a disk that reads back as the same table — a broken invariant traps,
/// which libFuzzer reports as a crash. Lives in the library so the corpus test runs the same path.
public func fuzzGPTOne(_ input: UnsafeRawBufferPointer) {
    let src = MemorySource(Array(input))
    for ss in [512, 4096] {
        guard let g = try? GPT.read(from: src, sectorSize: ss) else { continue }
        guard g.backupProblem == nil else { continue }
        var clean = g
        clean.usedBackupHeader = false
        // diskBytes ≤ the input's size (the table was read from it), so this allocation is bounded.
        var disk = [UInt8](repeating: 0, count: Int(g.diskBytes))
        disk.put(g.encodePrimaryArea(), at: Int(g.primaryArea.lowerBound))
        disk.put(g.encodeBackupArea(), at: Int(g.backupArea.lowerBound))
        guard let back = try? GPT.read(from: MemorySource(disk), sectorSize: ss), back == clean else {
            fatalError("GPT round trip: a table read with \(ss)-byte sectors does not read back after re-encoding")
        }
    }
    _ = try? PartitionTable.read(from: src)
}
