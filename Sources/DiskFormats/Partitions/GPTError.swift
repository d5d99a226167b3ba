import BlockCore

/// A GPT that breaks a rule of UEFI 2.10 §5.2.3 / §5.3: which rule (`kind`, for callers and tests
/// that must tell a CRC flip from an overlap), which structure, where on the disk, and why.
/// Printed in the shape every parser uses: `GPT: header at 0x200: header CRC-32 mismatch (…)`.
public struct GPTError: Error, CustomStringConvertible, Hashable, Sendable {
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        /// Sector 0 is not a protective MBR (no 0xEE entry starting at LBA 1).
        case protectiveMBR
        /// A header or array lies (partly) past the end of the disk.
        case truncated
        case signature
        case revision
        case headerSize
        case headerCRC
        case reserved
        /// MyLBA / AlternateLBA do not name where the header is / where its twin is.
        case headerLocation
        case entrySize
        case entryCount
        /// The entry array overlaps a header or the usable area, or lies past the disk.
        case entryArrayLocation
        case entryArrayCRC
        /// FirstUsableLBA / LastUsableLBA out of order or outside the disk.
        case usableRange
        /// A partition whose EndingLBA is before its StartingLBA.
        case partitionRange
        /// A partition outside FirstUsableLBA...LastUsableLBA.
        case partitionOutsideUsable
        case overlappingPartitions
        /// The primary and backup headers are both valid but describe different tables.
        case backupMismatch
        /// A table the writer was asked to produce is not a valid GPT (programmer input, not disk input).
        case invalidLayout
    }

    public var kind: Kind
    /// "header", "backup header", "partition entry 3", "protective MBR", …
    public var structure: String
    /// Byte offset of the structure or the offending field on the disk.
    public var offset: UInt64
    public var reason: String

    public init(_ kind: Kind, _ structure: String, at offset: UInt64, _ reason: String) {
        self.kind = kind
        self.structure = structure
        self.offset = offset
        self.reason = reason
    }

    /// The same report as the product-wide `FormatError`.
    public var formatError: FormatError { FormatError("GPT", structure, at: offset, reason) }

    public var description: String { formatError.description }
}
