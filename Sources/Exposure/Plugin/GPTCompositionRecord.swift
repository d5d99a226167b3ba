import BlockCore
import DiskFormats

extension PluginPointer.Composition {
    /// A "gpt" composition as the pointer records it (docs/formats/gpt.md, "Composition"): the
    /// table's parameters and, per partition, its entry and where its bytes come from. The table
    /// bytes themselves are not stored: `GPT.standard` re-encodes them deterministically.
    public struct GPTRecord: Codable, Sendable, Equatable {
        public var sectorSize: Int
        public var diskGUID: GUID
        public var entryCount: Int
        public var entrySize: Int
        public var partitions: [PartitionRecord]

        public init(sectorSize: Int, diskGUID: GUID, entryCount: Int = GPT.defaultEntryCount,
                    entrySize: Int = GPT.defaultEntrySize, partitions: [PartitionRecord]) {
            self.sectorSize = sectorSize
            self.diskGUID = diskGUID
            self.entryCount = entryCount
            self.entrySize = entrySize
            self.partitions = partitions
        }

        /// The table for a disk of `diskSize` bytes.
        public func table(diskSize: UInt64) throws -> GPT {
            try GPT.standard(diskSize: diskSize, sectorSize: sectorSize, diskGUID: diskGUID,
                             partitions: partitions.map(\.entry), entryCount: entryCount, entrySize: entrySize)
        }
    }

    /// One partition of a GPT composition.
    public struct PartitionRecord: Codable, Sendable, Equatable {
        /// `content` of the partition that holds the backup's volume (with `volumePatches`).
        public static let backupContent = "backup"

        public var number: Int
        public var typeGUID: GUID
        public var uniqueGUID: GUID
        public var firstLBA: UInt64
        public var lastLBA: UInt64
        public var attributes: UInt64
        public var name: String
        /// Where the partition's bytes come from: `backupContent`, or a source the composition
        /// layer synthesizes (resolved by `DiskComposer.partitionContent`).
        public var content: String
        /// A synthesized ESP's parameters and files (`content == SynthesizedESP.content`; docs/uefi.md).
        public var esp: ESPRecord?

        public init(entry: GPT.Partition, content: String) {
            number = entry.number
            typeGUID = entry.typeGUID
            uniqueGUID = entry.uniqueGUID
            firstLBA = entry.firstLBA
            lastLBA = entry.lastLBA
            attributes = entry.attributes
            name = entry.name
            self.content = content
        }

        public var entry: GPT.Partition {
            GPT.Partition(number: number, typeGUID: typeGUID, uniqueGUID: uniqueGUID, firstLBA: firstLBA, lastLBA: lastLBA,
                          attributes: attributes, name: name)
        }
    }
}
