import BlockCore

/// CHS geometry of a VHD footer (spec: "Disk Geometry": cylinders u16, heads u8, sectors/track u8).
public struct VHDGeometry: Sendable, Equatable, CustomStringConvertible {
    public var cylinders: UInt16
    public var heads: UInt8
    public var sectorsPerTrack: UInt8

    public init(cylinders: UInt16, heads: UInt8, sectorsPerTrack: UInt8) {
        self.cylinders = cylinders
        self.heads = heads
        self.sectorsPerTrack = sectorsPerTrack
    }

    /// Sectors the geometry addresses: what Virtual PC (and QEMU, for creator apps it does not
    /// know) takes as the disk's size.
    public var sectors: UInt64 { UInt64(cylinders) * UInt64(heads) * UInt64(sectorsPerTrack) }
    public var description: String { "\(cylinders)/\(heads)/\(sectorsPerTrack)" }

    /// The spec's algorithm (appendix "CHS Calculation") for a disk of `size` bytes: the
    /// geometry whose capacity is the largest not above the size, capped at 65535/16/255.
    public static func forSize(_ size: UInt64) -> VHDGeometry {
        var total = size / VHD.sector
        if total > VHD.maxGeometrySectors { total = VHD.maxGeometrySectors }
        var spt: UInt64, heads: UInt64, cth: UInt64
        if total >= 65535 * 16 * 63 {
            spt = 255
            heads = 16
            cth = total / spt
        } else {
            spt = 17
            cth = total / spt
            heads = max(4, (cth + 1023) / 1024)
            if cth >= heads * 1024 || heads > 16 {
                spt = 31
                heads = 16
                cth = total / spt
            }
            if cth >= heads * 1024 {
                spt = 63
                heads = 16
                cth = total / spt
            }
        }
        let cylinders = cth / heads
        return VHDGeometry(cylinders: UInt16(min(cylinders, 65535)), heads: UInt8(heads), sectorsPerTrack: UInt8(spt))
    }
}

/// The 512-byte hard disk footer: last in every VHD, and copied at offset 0 in dynamic ones.
///
/// | Offset | Size | Field |
/// |---|---|---|
/// | 0 | 8 | cookie `conectix` |
/// | 8 | 4 | features (2: reserved bit, always set) |
/// | 12 | 4 | file format version 0x00010000 |
/// | 16 | 8 | data offset: the dynamic header's offset, all ones for fixed disks |
/// | 24 | 4 | time stamp (seconds since 2000-01-01 UTC) |
/// | 28 | 4 | creator application |
/// | 32 | 4 | creator version |
/// | 36 | 4 | creator host OS |
/// | 40 | 8 | original size |
/// | 48 | 8 | current size |
/// | 56 | 4 | geometry |
/// | 60 | 4 | disk type (2 fixed, 3 dynamic, 4 differencing) |
/// | 64 | 4 | checksum |
/// | 68 | 16 | unique id |
/// | 84 | 1 | saved state |
/// | 85 | 427 | reserved (zeros) |
public struct VHDFooter: Sendable, Equatable {
    public var features: UInt32 = 2
    public var formatVersion: UInt32 = 0x0001_0000
    public var dataOffset: UInt64
    public var timestamp: UInt32 = 0
    public var creatorApp: [UInt8]
    public var creatorVersion: UInt32
    public var creatorHostOS: [UInt8]
    public var originalSize: UInt64
    public var currentSize: UInt64
    public var geometry: VHDGeometry
    public var diskTypeRaw: UInt32
    public var uniqueID: [UInt8]
    public var savedState: UInt8 = 0
    /// As stored (parse) or as computed (serialize).
    public var checksum: UInt32 = 0
    /// The checksum the bytes call for (parse only; equal to `checksum` when intact).
    public var computedChecksum: UInt32 = 0
    /// Reserved bytes 85..<512 are all zero (parse only).
    public var reservedIsZero = true
    /// Bytes stored at the start of the reserved area (at most 427): BootLab's sidecar-pointer
    /// tag in a fixed VHD plugin (`VHDSidecarTag`), nothing otherwise. Parse: the whole area.
    public var reserved: [UInt8] = []

    public var diskType: VHD.DiskType? { VHD.DiskType(rawValue: diskTypeRaw) }
    public var checksumIsValid: Bool { checksum == computedChecksum }

    public init(dataOffset: UInt64, creatorApp: [UInt8], creatorVersion: UInt32, creatorHostOS: [UInt8],
                size: UInt64, geometry: VHDGeometry, diskType: VHD.DiskType, uniqueID: [UInt8], timestamp: UInt32 = 0) {
        self.dataOffset = dataOffset
        self.creatorApp = creatorApp
        self.creatorVersion = creatorVersion
        self.creatorHostOS = creatorHostOS
        self.originalSize = size
        self.currentSize = size
        self.geometry = geometry
        self.diskTypeRaw = diskType.rawValue
        self.uniqueID = uniqueID
        self.timestamp = timestamp
    }

    /// The 512 bytes, checksum computed.
    public func serialize() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: VHD.footerSize)
        b.put(VHD.cookie, at: 0)
        VHD.put32(&b, features, 8)
        VHD.put32(&b, formatVersion, 12)
        VHD.put64(&b, dataOffset, 16)
        VHD.put32(&b, timestamp, 24)
        b.put(Array(creatorApp.prefix(4)), at: 28)
        VHD.put32(&b, creatorVersion, 32)
        b.put(Array(creatorHostOS.prefix(4)), at: 36)
        VHD.put64(&b, originalSize, 40)
        VHD.put64(&b, currentSize, 48)
        VHD.put16(&b, geometry.cylinders, 56)
        b[58] = geometry.heads
        b[59] = geometry.sectorsPerTrack
        VHD.put32(&b, diskTypeRaw, 60)
        b.put(Array(uniqueID.prefix(16)), at: 68)
        b[84] = savedState
        b.put(Array(reserved.prefix(427)), at: 85)
        VHD.put32(&b, VHD.checksum(b, fieldAt: 64), 64)
        return b
    }

    /// Parses 512 bytes found at `offset`. Throws on a short buffer or a wrong cookie; a bad
    /// checksum is kept (`checksumIsValid`) for the caller to judge.
    public static func parse(_ bytes: [UInt8], at offset: UInt64, name: String = "footer") throws -> VHDFooter {
        let v = ByteView(bytes, base: offset, format: VHD.formatName, structure: name)
        guard v.count >= VHD.footerSize else { throw v.error(at: 0, "truncated: \(v.count) of 512 bytes") }
        guard try v.slice(0, 8) == VHD.cookie else {
            throw v.error(at: 0, "cookie is not 'conectix' (\(VHD.fourCC(try v.slice(0, 8))))")
        }
        let b = Array(bytes[0..<VHD.footerSize])
        var f = VHDFooter(dataOffset: VHD.be64(b, 16), creatorApp: Array(b[28..<32]), creatorVersion: VHD.be32(b, 32),
                          creatorHostOS: Array(b[36..<40]), size: VHD.be64(b, 48),
                          geometry: VHDGeometry(cylinders: VHD.be16(b, 56), heads: b[58], sectorsPerTrack: b[59]),
                          diskType: .fixed, uniqueID: Array(b[68..<84]), timestamp: VHD.be32(b, 24))
        f.features = VHD.be32(b, 8)
        f.formatVersion = VHD.be32(b, 12)
        f.originalSize = VHD.be64(b, 40)
        f.diskTypeRaw = VHD.be32(b, 60)
        f.savedState = b[84]
        f.checksum = VHD.be32(b, 64)
        f.computedChecksum = VHD.checksum(b, fieldAt: 64)
        f.reservedIsZero = b[85...].allSatisfy { $0 == 0 }
        f.reserved = Array(b[85...])
        return f
    }

    /// The unique id as text, bytes in stored order (how libvhdi prints it).
    public var uniqueIDText: String {
        let h = uniqueID.hex
        guard h.count == 32 else { return h }
        let c = Array(h)
        return String(c[0..<8]) + "-" + String(c[8..<12]) + "-" + String(c[12..<16]) + "-" + String(c[16..<20]) + "-" + String(c[20..<32])
    }
}

/// The 1024-byte dynamic disk header ("cxsparse") of dynamic and differencing disks.
///
/// | Offset | Size | Field |
/// |---|---|---|
/// | 0 | 8 | cookie `cxsparse` |
/// | 8 | 8 | data offset (unused: all ones) |
/// | 16 | 8 | table offset: the BAT's file offset |
/// | 24 | 4 | header version 0x00010000 |
/// | 28 | 4 | max table entries (BAT entries) |
/// | 32 | 4 | block size |
/// | 36 | 4 | checksum |
/// | 40 | 16 | parent unique id |
/// | 56 | 4 | parent time stamp |
/// | 60 | 4 | reserved |
/// | 64 | 512 | parent unicode name (UTF-16BE) |
/// | 576 | 8 × 24 | parent locator entries |
/// | 768 | 256 | reserved |
public struct VHDDynamicHeader: Sendable, Equatable {
    public var dataOffset: UInt64 = .max
    public var tableOffset: UInt64
    public var headerVersion: UInt32 = 0x0001_0000
    public var maxTableEntries: UInt32
    public var blockSize: UInt32
    public var parentUniqueID: [UInt8] = [UInt8](repeating: 0, count: 16)
    public var parentTimestamp: UInt32 = 0
    /// UTF-16BE parent name, 512 bytes.
    public var parentName: [UInt8] = [UInt8](repeating: 0, count: 512)
    /// The 8 parent locator entries, 24 bytes each, as stored.
    public var parentLocators: [UInt8] = [UInt8](repeating: 0, count: 192)
    public var checksum: UInt32 = 0
    public var computedChecksum: UInt32 = 0

    public var checksumIsValid: Bool { checksum == computedChecksum }

    public init(tableOffset: UInt64, maxTableEntries: UInt32, blockSize: UInt32) {
        self.tableOffset = tableOffset
        self.maxTableEntries = maxTableEntries
        self.blockSize = blockSize
    }

    public func serialize() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: VHD.dynamicHeaderSize)
        b.put(VHD.dynamicCookie, at: 0)
        VHD.put64(&b, dataOffset, 8)
        VHD.put64(&b, tableOffset, 16)
        VHD.put32(&b, headerVersion, 24)
        VHD.put32(&b, maxTableEntries, 28)
        VHD.put32(&b, blockSize, 32)
        b.put(Array(parentUniqueID.prefix(16)), at: 40)
        VHD.put32(&b, parentTimestamp, 56)
        b.put(Array(parentName.prefix(512)), at: 64)
        b.put(Array(parentLocators.prefix(192)), at: 576)
        VHD.put32(&b, VHD.checksum(b, fieldAt: 36), 36)
        return b
    }

    /// Parses 1024 bytes found at `offset`; a bad checksum is kept for the caller to judge.
    public static func parse(_ bytes: [UInt8], at offset: UInt64) throws -> VHDDynamicHeader {
        let v = ByteView(bytes, base: offset, format: VHD.formatName, structure: "dynamic disk header")
        guard v.count >= VHD.dynamicHeaderSize else { throw v.error(at: 0, "truncated: \(v.count) of 1024 bytes") }
        guard try v.slice(0, 8) == VHD.dynamicCookie else {
            throw v.error(at: 0, "cookie is not 'cxsparse' (\(VHD.fourCC(try v.slice(0, 8))))")
        }
        let b = Array(bytes[0..<VHD.dynamicHeaderSize])
        var h = VHDDynamicHeader(tableOffset: VHD.be64(b, 16), maxTableEntries: VHD.be32(b, 28), blockSize: VHD.be32(b, 32))
        h.dataOffset = VHD.be64(b, 8)
        h.headerVersion = VHD.be32(b, 24)
        h.parentUniqueID = Array(b[40..<56])
        h.parentTimestamp = VHD.be32(b, 56)
        h.parentName = Array(b[64..<576])
        h.parentLocators = Array(b[576..<768])
        h.checksum = VHD.be32(b, 36)
        h.computedChecksum = VHD.checksum(b, fieldAt: 36)
        return h
    }

    /// The parent's name, decoded from UTF-16BE up to the first NUL.
    public var parentNameText: String {
        var units: [UInt16] = []
        var i = 0
        while i + 1 < parentName.count {
            let u = UInt16(parentName[i]) << 8 | UInt16(parentName[i + 1])
            if u == 0 { break }
            units.append(u)
            i += 2
        }
        return String(decoding: units, as: UTF16.self)
    }
}

/// A fixed VHD has no byte that is not the disk's except its footer, so a fixed VHD plugin keeps
/// its pointer *outside* the file, in a sidecar `<plugin>.pointer` (the method's "list of plugin
/// files kept outside the file"), and the footer's reserved area ties the two: the tag
/// "BLSIDE01" followed by the SHA-256 of the pointer blob (40 bytes). The footer checksum covers
/// the tag; readers ignore reserved bytes (QEMU, libvhdi; the spec asks for zeros, which our
/// check accepts in place of this exact tag only).
public enum VHDSidecarTag {
    public static let magic: [UInt8] = Array("BLSIDE01".utf8)
    public static let length = 40
    /// `path` + this: where the blob lives.
    public static let suffix = ".pointer"

    public static func tag(for blob: [UInt8]) -> [UInt8] { magic + SHA256.hash(blob) }

    /// The blob's SHA-256 when `reserved` starts with a tag and is zero after it.
    public static func digest(in reserved: [UInt8]) -> [UInt8]? {
        guard reserved.count >= length, Array(reserved[0..<8]) == magic,
              reserved[length...].allSatisfy({ $0 == 0 }) else { return nil }
        return Array(reserved[8..<length])
    }
}
