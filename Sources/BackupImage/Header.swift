import BlockCore

/// What the backup holds: a whole disk (partition table included) or one volume.
public enum SourceKind: UInt8, Sendable, Codable, Hashable {
    case disk = 0
    case volume = 1

    public var name: String { self == .disk ? "disk" : "volume" }
}

/// Partition scheme of the original disk, when known.
public enum PartitionScheme: UInt8, Sendable, Codable, Hashable {
    case none = 0
    case mbr = 1
    case gpt = 2

    public var name: String { ["none", "mbr", "gpt"][Int(rawValue)] }
}

/// Block codec (docs/formats/backup-image.md §4).
public enum BlockCodec: UInt8, Sendable, Codable, Hashable {
    case none = 0
    case zstd = 1
}

/// scrypt cost parameters. Memory is 128·r·N bytes.
public struct ScryptParameters: Sendable, Hashable, Codable {
    public var log2N: UInt8
    public var r: UInt32
    public var p: UInt32

    public init(log2N: UInt8, r: UInt32, p: UInt32) {
        self.log2N = log2N
        self.r = r
        self.p = p
    }

    /// Default: N = 2^17, r = 8, p = 1 (128 MiB, ~0.3–0.5 s): RFC 7914's interactive-login cost.
    public static let `default` = ScryptParameters(log2N: 17, r: 8, p: 1)
    /// For tests and fuzzing only: instant and insecure.
    public static let testing = ScryptParameters(log2N: 4, r: 1, p: 1)

    /// Bounds a reader enforces before running scrypt on parameters read from a file, so a hostile
    /// header cannot make open allocate or spin without limit: 1 ≤ log2N ≤ 22, 1 ≤ r ≤ 32,
    /// 1 ≤ p ≤ 16, memory 128·r·N ≤ 1 GiB.
    public var isWithinBounds: Bool {
        guard log2N >= 1, log2N <= 22, r >= 1, r <= 32, p >= 1, p <= 16 else { return false }
        return 128 * UInt64(r) << UInt64(log2N) <= 1 << 30
    }
}

/// The fixed 4 KiB header at offset 0 of a `.bli` file (docs/formats/backup-image.md §2).
/// Field offsets below are the spec's; every field is little-endian.
public struct BackupHeader: Sendable, Hashable {
    public static let magic: [UInt8] = Array("BLIMAGE".utf8) + [0x1A]
    public static let size = 4096
    public static let majorVersion: UInt16 = 1
    /// The newest minor version this release writes: 1 adds the GPT entry fields at 2560
    /// (spec §2). A header whose 1.1 fields are all zero is written as 1.0, byte for byte what
    /// the 1.0 writer wrote, so images of MBR disks and bare volumes did not change.
    public static let minorVersion: UInt16 = 1
    public static let minBlockSize: UInt32 = 64 << 10
    public static let maxBlockSize: UInt32 = 4 << 20
    static let labelCapacity = 128
    static let fsHintCapacity = 16
    static let pathCapacity = 1024

    public struct Flags: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let encrypted = Flags(rawValue: 1 << 0)
        public static let hasParent = Flags(rawValue: 1 << 1)
        public static let usesVault = Flags(rawValue: 1 << 2)
        public static let hasCreationTime = Flags(rawValue: 1 << 3)
        static let known: Flags = [.encrypted, .hasParent, .usesVault, .hasCreationTime]
    }

    public var flags: Flags = []
    public var imageID: GUID = .zero
    public var parentID: GUID = .zero
    public var parentHeaderDigest: [UInt8] = [UInt8](repeating: 0, count: 32)
    public var virtualSize: UInt64 = 0
    public var blockSize: UInt32 = 1 << 20
    public var blockCount: UInt32 = 0
    public var compression: BlockCodec = .zstd
    public var compressionLevel: Int8 = 3
    public var sourceKind: SourceKind = .disk
    public var partitionScheme: PartitionScheme = .none
    /// 1-based partition number the volume came from; 0 when not taken from a partition table.
    public var partitionNumber: UInt32 = 0
    public var logicalSectorSize: UInt32 = 512
    public var mbrDiskSignature: UInt32 = 0
    public var gptDiskGUID: GUID = .zero
    public var gptPartitionType: GUID = .zero
    public var gptPartitionGUID: GUID = .zero
    public var mbrPartitionType: UInt8 = 0
    public var bootable: Bool = false
    public var partitionStartLBA: UInt64 = 0
    /// GPT entry fields of the partition the volume came from (minor version 1; zero/empty when
    /// not recorded): its attributes, its name, and the original entry array's shape.
    public var gptAttributes: UInt64 = 0
    public var gptPartitionName: String = ""
    public var gptEntryCount: UInt32 = 0
    public var gptEntrySize: UInt32 = 0
    public var partitionSizeBytes: UInt64 = 0
    public var originalDiskSize: UInt64 = 0
    public var creationTime: UInt64 = 0
    public var indexOffset: UInt64 = 0
    public var indexLength: UInt64 = 0
    public var indexDigest: [UInt8] = [UInt8](repeating: 0, count: 32)
    public var vaultID: GUID = .zero
    public var scrypt: ScryptParameters? = nil
    public var kdfSalt: [UInt8] = [UInt8](repeating: 0, count: 32)
    public var keyCheck: [UInt8] = [UInt8](repeating: 0, count: 32)
    public var fileSystemHint: String = ""
    public var label: String = ""
    /// The parent's path relative to this image's directory (or absolute).
    public var parentPath: String = ""
    /// The vault directory relative to this image's directory (or absolute).
    public var vaultPath: String = ""

    public init() {}

    /// True when a 1.1 field is set (the header is then written as version 1.1).
    public var hasGPTEntryFields: Bool {
        gptAttributes != 0 || !gptPartitionName.isEmpty || gptEntryCount != 0 || gptEntrySize != 0
    }
    /// The minor version `encode` writes (and what a parsed header's fields amount to: a
    /// reader accepts any minor, spec §2).
    public var minorVersion: UInt16 { hasGPTEntryFields ? 1 : 0 }

    static let gptNameUnits = 36

    public var isEncrypted: Bool { flags.contains(.encrypted) }
    public var hasParent: Bool { flags.contains(.hasParent) }
    public var usesVault: Bool { flags.contains(.usesVault) }

    public func encode() -> [UInt8] {
        var h = [UInt8](repeating: 0, count: BackupHeader.size)
        h.put(BackupHeader.magic, at: 0)
        h.putLE16(BackupHeader.majorVersion, at: 8)
        h.putLE16(minorVersion, at: 10)
        h.putLE32(UInt32(BackupHeader.size), at: 12)
        h.putLE32(flags.rawValue, at: 20)
        h.put(imageID.bytes, at: 24)
        h.put(parentID.bytes, at: 40)
        h.put(parentHeaderDigest, at: 56)
        h.putLE64(virtualSize, at: 88)
        h.putLE32(blockSize, at: 96)
        h.putLE32(blockCount, at: 100)
        h[104] = compression.rawValue
        h[105] = UInt8(bitPattern: compressionLevel)
        h[106] = sourceKind.rawValue
        h[107] = partitionScheme.rawValue
        h.putLE32(partitionNumber, at: 108)
        h.putLE32(logicalSectorSize, at: 112)
        h.putLE32(mbrDiskSignature, at: 116)
        h.put(gptDiskGUID.bytes, at: 120)
        h.put(gptPartitionType.bytes, at: 136)
        h.put(gptPartitionGUID.bytes, at: 152)
        h[168] = mbrPartitionType
        h[169] = bootable ? 0x80 : 0
        h.putLE64(partitionStartLBA, at: 176)
        h.putLE64(partitionSizeBytes, at: 184)
        h.putLE64(originalDiskSize, at: 192)
        h.putLE64(creationTime, at: 200)
        h.putLE64(indexOffset, at: 208)
        h.putLE64(indexLength, at: 216)
        h.put(indexDigest, at: 224)
        h.put(vaultID.bytes, at: 256)
        if let s = scrypt {
            h[272] = 1
            h[273] = s.log2N
            h.putLE32(s.r, at: 276)
            h.putLE32(s.p, at: 280)
        }
        h.put(kdfSalt, at: 288)
        h.put(keyCheck, at: 320)
        h.put(Array(fileSystemHint.utf8.prefix(BackupHeader.fsHintCapacity)), at: 352)
        h.put(Array(label.utf8.prefix(BackupHeader.labelCapacity)), at: 368)
        let pp = Array(parentPath.utf8.prefix(BackupHeader.pathCapacity))
        let vp = Array(vaultPath.utf8.prefix(BackupHeader.pathCapacity))
        h.putLE16(UInt16(pp.count), at: 496)
        h.putLE16(UInt16(vp.count), at: 498)
        h.put(pp, at: 512)
        h.put(vp, at: 1536)
        // 1.1: GPT entry fields (spec §2.4).
        h.putLE64(gptAttributes, at: 2560)
        for (k, u) in gptPartitionName.utf16.prefix(BackupHeader.gptNameUnits).enumerated() { h.putLE16(u, at: 2568 + 2 * k) }
        h.putLE32(gptEntryCount, at: 2640)
        h.putLE32(gptEntrySize, at: 2644)
        h.putLE32(CRC32C.checksum(h, zeroingFieldAt: 16), at: 16)
        return h
    }

    /// True when `bytes` start with the header magic (what `bootlab info`/`check` dispatch on).
    public static func hasMagic(_ bytes: [UInt8]) -> Bool {
        bytes.count >= magic.count && Array(bytes[0..<magic.count]) == magic
    }

    /// Parses and validates the header (spec §2): magic, version, CRC, flags, block geometry,
    /// enumerations, KDF bounds, string lengths.
    public static func parse(_ bytes: [UInt8]) throws -> BackupHeader {
        let v = ByteView(bytes, base: 0, format: "backup image", structure: "header")
        guard bytes.count >= size else { throw v.error(at: bytes.count, "truncated: \(bytes.count) of \(size) bytes") }
        guard hasMagic(bytes) else { throw v.error(at: 0, "bad magic (not a BootLab backup image)") }
        let major = try v.u16(8)
        guard major == majorVersion else { throw v.error(at: 8, "unsupported major version \(major) (this reader knows \(majorVersion))") }
        let len = try v.u32(12)
        guard len == UInt32(size) else { throw v.error(at: 12, "header length \(len) is not \(size)") }
        let hb = Array(bytes[0..<size])
        let crc = hb.le32(16)
        let computed = CRC32C.checksum(hb, zeroingFieldAt: 16)
        guard crc == computed else {
            throw v.error(at: 16, "header CRC-32C mismatch (stored 0x\(String(crc, radix: 16)), computed 0x\(String(computed, radix: 16)))")
        }
        var h = BackupHeader()
        h.flags = Flags(rawValue: hb.le32(20))
        guard Flags.known.isSuperset(of: h.flags) else { throw v.error(at: 20, "unknown flags 0x\(String(h.flags.rawValue, radix: 16))") }
        h.imageID = GUID(bytes: Array(hb[24..<40]))
        h.parentID = GUID(bytes: Array(hb[40..<56]))
        h.parentHeaderDigest = Array(hb[56..<88])
        h.virtualSize = hb.le64(88)
        h.blockSize = hb.le32(96)
        h.blockCount = hb.le32(100)
        guard h.blockSize >= minBlockSize, h.blockSize <= maxBlockSize, h.blockSize.nonzeroBitCount == 1 else {
            throw v.error(at: 96, "block size \(h.blockSize) is not a power of two in 64 KiB...4 MiB")
        }
        let expectedBlocks = (h.virtualSize + UInt64(h.blockSize) - 1) / UInt64(h.blockSize)
        guard UInt64(h.blockCount) == expectedBlocks else {
            throw v.error(at: 100, "block count \(h.blockCount) does not cover virtual size \(h.virtualSize) (expected \(expectedBlocks))")
        }
        guard let codec = BlockCodec(rawValue: hb[104]) else { throw v.error(at: 104, "unknown compression \(hb[104])") }
        h.compression = codec
        h.compressionLevel = Int8(bitPattern: hb[105])
        guard let kind = SourceKind(rawValue: hb[106]) else { throw v.error(at: 106, "unknown source kind \(hb[106])") }
        h.sourceKind = kind
        guard let scheme = PartitionScheme(rawValue: hb[107]) else { throw v.error(at: 107, "unknown partition scheme \(hb[107])") }
        h.partitionScheme = scheme
        h.partitionNumber = hb.le32(108)
        h.logicalSectorSize = hb.le32(112)
        guard [512, 4096].contains(h.logicalSectorSize) else { throw v.error(at: 112, "logical sector size \(h.logicalSectorSize) is not 512 or 4096") }
        h.mbrDiskSignature = hb.le32(116)
        h.gptDiskGUID = GUID(bytes: Array(hb[120..<136]))
        h.gptPartitionType = GUID(bytes: Array(hb[136..<152]))
        h.gptPartitionGUID = GUID(bytes: Array(hb[152..<168]))
        h.mbrPartitionType = hb[168]
        guard hb[169] == 0 || hb[169] == 0x80 else { throw v.error(at: 169, "boot flag 0x\(String(hb[169], radix: 16)) is neither 0x00 nor 0x80") }
        h.bootable = hb[169] == 0x80
        h.partitionStartLBA = hb.le64(176)
        h.partitionSizeBytes = hb.le64(184)
        h.originalDiskSize = hb.le64(192)
        h.creationTime = hb.le64(200)
        h.indexOffset = hb.le64(208)
        h.indexLength = hb.le64(216)
        h.indexDigest = Array(hb[224..<256])
        guard h.indexLength == UInt64(h.blockCount) * UInt64(IndexEntry.size) else {
            throw v.error(at: 216, "index length \(h.indexLength) is not \(h.blockCount) entries of \(IndexEntry.size) bytes")
        }
        guard h.indexOffset >= UInt64(size) else { throw v.error(at: 208, "index offset \(h.indexOffset) inside the header") }
        h.vaultID = GUID(bytes: Array(hb[256..<272]))
        switch hb[272] {
        case 0: h.scrypt = nil
        case 1:
            let s = ScryptParameters(log2N: hb[273], r: hb.le32(276), p: hb.le32(280))
            guard s.isWithinBounds else { throw v.error(at: 273, "scrypt parameters log2N=\(s.log2N) r=\(s.r) p=\(s.p) exceed the reader's bounds") }
            h.scrypt = s
        default: throw v.error(at: 272, "unknown KDF \(hb[272])")
        }
        guard h.isEncrypted == (h.scrypt != nil) else { throw v.error(at: 272, "encrypted flag and KDF disagree") }
        h.kdfSalt = Array(hb[288..<320])
        h.keyCheck = Array(hb[320..<352])
        h.fileSystemHint = nulTerminated(hb[352..<368])
        h.label = nulTerminated(hb[368..<496])
        let pl = Int(hb.le16(496)), vl = Int(hb.le16(498))
        guard pl <= pathCapacity else { throw v.error(at: 496, "parent path length \(pl) exceeds \(pathCapacity)") }
        guard vl <= pathCapacity else { throw v.error(at: 498, "vault path length \(vl) exceeds \(pathCapacity)") }
        h.parentPath = String(decoding: hb[512..<512 + pl], as: UTF8.self)
        h.vaultPath = String(decoding: hb[1536..<1536 + vl], as: UTF8.self)
        // 1.1 fields; a 1.0 writer left these bytes zero (reserved), so a 1.0 image reads as
        // "not recorded". Entry shape bounded as UEFI 2.10 table 5-5 bounds it (docs/formats/gpt.md).
        h.gptAttributes = hb.le64(2560)
        var units: [UInt16] = []
        for k in 0..<gptNameUnits {
            let u = hb.le16(2568 + 2 * k)
            if u == 0 { break }
            units.append(u)
        }
        h.gptPartitionName = String(decoding: units, as: UTF16.self)
        h.gptEntryCount = hb.le32(2640)
        h.gptEntrySize = hb.le32(2644)
        if h.gptEntrySize != 0 || h.gptEntryCount != 0 {
            guard h.gptEntrySize >= 128, h.gptEntrySize <= 4096, h.gptEntrySize.nonzeroBitCount == 1 else {
                throw v.error(at: 2644, "GPT entry size \(h.gptEntrySize) is not 128 × 2^n (128...4096)")
            }
            guard h.gptEntryCount >= 1, UInt64(h.gptEntryCount) * UInt64(h.gptEntrySize) <= 4 << 20 else {
                throw v.error(at: 2640, "GPT entry count \(h.gptEntryCount) outside 1...\((4 << 20) / Int(h.gptEntrySize))")
            }
        }
        guard h.hasParent == !h.parentID.isZero else { throw v.error(at: 40, "parent flag and parent ID disagree") }
        guard h.usesVault == !h.vaultID.isZero else { throw v.error(at: 256, "vault flag and vault ID disagree") }
        return h
    }

    private static func nulTerminated(_ s: ArraySlice<UInt8>) -> String {
        String(decoding: s.prefix { $0 != 0 }, as: UTF8.self)
    }
}

/// The 64-byte trailer at the very end of a `.bli` file (spec §5): its presence at EOF is how a
/// truncated file is detected.
public struct BackupTrailer: Sendable, Hashable {
    public static let size = 64
    public static let magic: [UInt8] = Array("BLITRAIL".utf8)

    public var imageID: GUID
    public var indexOffset: UInt64
    public var indexLength: UInt64
    public var headerDigest: [UInt8]

    public func encode() -> [UInt8] {
        var t = [UInt8](repeating: 0, count: BackupTrailer.size)
        t.put(BackupTrailer.magic, at: 0)
        t.putLE16(BackupHeader.majorVersion, at: 8)
        t.put(imageID.bytes, at: 12)
        t.putLE64(indexOffset, at: 28)
        t.putLE64(indexLength, at: 36)
        t.put(Array(headerDigest.prefix(16)), at: 44)
        t.putLE32(CRC32C.checksum(t, zeroingFieldAt: 60), at: 60)
        return t
    }

    public static func parse(_ bytes: [UInt8], at base: UInt64) throws -> BackupTrailer {
        let v = ByteView(bytes, base: base, format: "backup image", structure: "trailer")
        guard bytes.count == size else { throw v.error(at: 0, "truncated trailer") }
        guard Array(bytes[0..<8]) == magic else { throw v.error(at: 0, "no trailer magic at the end of the file (truncated or not a complete image)") }
        guard bytes.le16(8) == BackupHeader.majorVersion else { throw v.error(at: 8, "trailer version \(bytes.le16(8))") }
        guard CRC32C.checksum(bytes, zeroingFieldAt: 60) == bytes.le32(60) else { throw v.error(at: 60, "trailer CRC-32C mismatch") }
        return BackupTrailer(imageID: GUID(bytes: Array(bytes[12..<28])), indexOffset: bytes.le64(28),
                             indexLength: bytes.le64(36), headerDigest: Array(bytes[44..<60]))
    }
}

/// One 64-byte block-index entry (spec §3).
public struct IndexEntry: Sendable, Hashable {
    public static let size = 64

    public enum Kind: UInt8, Sendable, Hashable {
        /// Not stored in this image: inherited from the parent, or never written (no parent).
        case absent = 0
        /// All zeros; nothing stored.
        case zero = 1
        /// Stored in this file at `offset`.
        case local = 2
        /// Stored in the vault under `digest`.
        case vault = 3
    }

    public var kind: Kind
    public var codec: BlockCodec
    public var storedLength: UInt32
    public var offset: UInt64
    /// SHA-256 of the plaintext (plain images) or HMAC-SHA-256 under the digest key (encrypted);
    /// for vault blocks also the vault address.
    public var digest: [UInt8]
    /// CRC-32C of the stored bytes (local blocks).
    public var payloadCRC: UInt32

    public init(kind: Kind, codec: BlockCodec = .none, storedLength: UInt32 = 0, offset: UInt64 = 0,
                digest: [UInt8] = [UInt8](repeating: 0, count: 32), payloadCRC: UInt32 = 0) {
        self.kind = kind
        self.codec = codec
        self.storedLength = storedLength
        self.offset = offset
        self.digest = digest
        self.payloadCRC = payloadCRC
    }

    public func encode(into out: inout [UInt8]) {
        var e = [UInt8](repeating: 0, count: IndexEntry.size)
        e[0] = kind.rawValue
        e[1] = codec.rawValue
        e.putLE32(storedLength, at: 4)
        e.putLE64(offset, at: 8)
        e.put(digest, at: 16)
        e.putLE32(payloadCRC, at: 48)
        e.putLE32(CRC32C.checksum(Array(e[0..<60])), at: 60)
        out.append(contentsOf: e)
    }

    /// Parses entry `number` from `bytes[at..<at+64]`; `fileOffset` is its position for errors.
    static func parse(_ bytes: [UInt8], at o: Int, number: Int, fileOffset: UInt64) throws -> IndexEntry {
        func err(_ field: Int, _ reason: String) -> FormatError {
            FormatError("backup image", "block index entry \(number)", at: fileOffset + UInt64(field), reason)
        }
        let crc = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[o..<o + 60])) }
        guard crc == bytes.le32(o + 60) else { throw err(60, "CRC-32C mismatch") }
        guard let kind = Kind(rawValue: bytes[o]) else { throw err(0, "unknown kind \(bytes[o])") }
        guard let codec = BlockCodec(rawValue: bytes[o + 1]) else { throw err(1, "unknown codec \(bytes[o + 1])") }
        return IndexEntry(kind: kind, codec: codec, storedLength: bytes.le32(o + 4), offset: bytes.le64(o + 8),
                          digest: Array(bytes[o + 16..<o + 48]), payloadCRC: bytes.le32(o + 48))
    }
}
