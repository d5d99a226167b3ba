import BlockCore

/// The GUID partition entry array (UEFI 2.10 §5.3.3, table 5-6): `entryCount` entries of
/// `entrySize` bytes, unused entries all zero. Decoding and the rules on the partitions it
/// describes, shared by the reader and the writer.
public enum GPTEntryArray {
    /// Encodes `partitions` into an array of `count` × `size` bytes (entry `number` at index number−1).
    /// The caller has validated the partitions (`GPT.validate`).
    public static func encode(_ partitions: [GPT.Partition], count: Int, size: Int) -> [UInt8] {
        var a = [UInt8](repeating: 0, count: count * size)
        for p in partitions {
            let o = (p.number - 1) * size
            a.put(p.typeGUID.bytes, at: o)
            a.put(p.uniqueGUID.bytes, at: o + 16)
            a.putLE64(p.firstLBA, at: o + 32)
            a.putLE64(p.lastLBA, at: o + 40)
            a.putLE64(p.attributes, at: o + 48)
            for (k, u) in p.name.utf16.prefix(GPT.nameUnits).enumerated() { a.putLE16(u, at: o + 56 + 2 * k) }
        }
        return a
    }

    /// Decodes the used entries of `array` (read at byte `base`); applies the per-entry rule
    /// (StartingLBA ≤ EndingLBA). Usable-range and overlap rules: `GPT.checkPartitions`.
    public static func decode(_ array: [UInt8], count: Int, size: Int, base: UInt64) throws -> [GPT.Partition] {
        precondition(array.count >= count * size, "entry array shorter than count × size")
        var parts: [GPT.Partition] = []
        for i in 0..<count {
            let o = i * size
            let type = GUID(bytes: Array(array[o..<o + 16]))
            // Table 5-6, PartitionTypeGUID: "Unused Entry 00000000-0000-0000-0000-000000000000".
            if type.isZero { continue }
            let first = array.le64(o + 32), last = array.le64(o + 40)
            // Table 5-6, EndingLBA: "Ending LBA of this partition (inclusive)" — so it cannot precede StartingLBA.
            guard first <= last else {
                throw GPTError(.partitionRange, "partition entry \(i + 1)", at: base + UInt64(o + 32),
                               "StartingLBA \(first) after EndingLBA \(last)")
            }
            var units: [UInt16] = []
            for k in 0..<GPT.nameUnits {
                let u = array.le16(o + 56 + 2 * k)
                if u == 0 { break }
                units.append(u)
            }
            parts.append(GPT.Partition(number: i + 1, typeGUID: type, uniqueGUID: GUID(bytes: Array(array[o + 16..<o + 32])),
                                       firstLBA: first, lastLBA: last, attributes: array.le64(o + 48),
                                       name: String(decoding: units, as: UTF16.self)))
        }
        return parts
    }
}

extension GPT {
    /// The rules on the partitions as a set, for a table read from a disk (`arrayBase`: byte offset
    /// of the entry array, for error offsets) and for one about to be written.
    func checkPartitions(arrayBase: UInt64) throws {
        let numbers = Set(partitions.map(\.number))
        guard numbers.count == partitions.count else {
            throw GPTError(.invalidLayout, "partition entry array", at: arrayBase, "two partitions share one entry number")
        }
        for p in partitions {
            let at = arrayBase + UInt64((p.number - 1) * entrySize)
            guard p.number >= 1, p.number <= entryCount else {
                throw GPTError(.invalidLayout, "partition entry \(p.number)", at: arrayBase, "number outside 1...\(entryCount)")
            }
            guard p.firstLBA <= p.lastLBA else {
                throw GPTError(.partitionRange, "partition entry \(p.number)", at: at + 32, "StartingLBA \(p.firstLBA) after EndingLBA \(p.lastLBA)")
            }
            // §5.3.1: "GPT Partition Entries define a partition that is contained in a range
            // that is within the usable space declared by the GPT Header" (FirstUsableLBA …
            // LastUsableLBA, table 5-5); outside it a partition would overlap a header or an array.
            guard p.firstLBA >= firstUsableLBA, p.lastLBA <= lastUsableLBA else {
                throw GPTError(.partitionOutsideUsable, "partition entry \(p.number)", at: at + 32,
                               "LBAs \(p.firstLBA)...\(p.lastLBA) outside the usable \(firstUsableLBA)...\(lastUsableLBA)")
            }
        }
        // §5.3.1: "Each defined partition must not overlap with any other defined partition."
        let sorted = partitions.sorted { ($0.firstLBA, $0.number) < ($1.firstLBA, $1.number) }
        for (a, b) in zip(sorted, sorted.dropFirst()) where b.firstLBA <= a.lastLBA {
            let later = max(a.number, b.number)
            throw GPTError(.overlappingPartitions, "partition entry \(later)", at: arrayBase + UInt64((later - 1) * entrySize) + 32,
                           "LBAs \(b.firstLBA)...\(b.lastLBA) (entry \(b.number)) overlap \(a.firstLBA)...\(a.lastLBA) (entry \(a.number))")
        }
    }
}
