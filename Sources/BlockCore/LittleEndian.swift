/// Bounds-checked little-endian field access over a byte buffer read from an untrusted file.
///
/// `base` is the buffer's offset in the file, so errors name absolute file offsets.
public struct ByteView: Sendable {
    public let bytes: [UInt8]
    public let base: UInt64
    public let format: String
    public let structure: String

    public init(_ bytes: [UInt8], base: UInt64 = 0, format: String, structure: String) {
        self.bytes = bytes
        self.base = base
        self.format = format
        self.structure = structure
    }

    public var count: Int { bytes.count }

    public func error(at fieldOffset: Int, _ reason: String) -> FormatError {
        FormatError(format, structure, at: base + UInt64(max(0, fieldOffset)), reason)
    }

    private func need(_ at: Int, _ n: Int) throws {
        guard at >= 0, n >= 0, at <= bytes.count, bytes.count - at >= n else {
            throw error(at: at, "truncated: need \(n) bytes at +\(at), have \(bytes.count)")
        }
    }

    public func u8(_ at: Int) throws -> UInt8 { try need(at, 1); return bytes[at] }
    public func u16(_ at: Int) throws -> UInt16 { try need(at, 2); return bytes.le16(at) }
    public func u32(_ at: Int) throws -> UInt32 { try need(at, 4); return bytes.le32(at) }
    public func u64(_ at: Int) throws -> UInt64 { try need(at, 8); return bytes.le64(at) }
    public func slice(_ at: Int, _ n: Int) throws -> [UInt8] { try need(at, n); return Array(bytes[at..<at + n]) }
    public func ascii(_ at: Int, _ n: Int) throws -> String {
        String(decoding: try slice(at, n), as: UTF8.self)
    }
}

extension Array where Element == UInt8 {
    /// Unchecked little-endian loads; callers have bounds-checked already.
    @inlinable public func le16(_ at: Int) -> UInt16 { UInt16(self[at]) | UInt16(self[at + 1]) << 8 }
    @inlinable public func le32(_ at: Int) -> UInt32 {
        UInt32(self[at]) | UInt32(self[at + 1]) << 8 | UInt32(self[at + 2]) << 16 | UInt32(self[at + 3]) << 24
    }
    @inlinable public func le64(_ at: Int) -> UInt64 { UInt64(le32(at)) | UInt64(le32(at + 4)) << 32 }

    @inlinable public mutating func putLE16(_ v: UInt16, at: Int) {
        self[at] = UInt8(truncatingIfNeeded: v); self[at + 1] = UInt8(truncatingIfNeeded: v >> 8)
    }
    @inlinable public mutating func putLE32(_ v: UInt32, at: Int) {
        for i in 0..<4 { self[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
    }
    @inlinable public mutating func putLE64(_ v: UInt64, at: Int) {
        for i in 0..<8 { self[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }
    @inlinable public mutating func put(_ bytes: [UInt8], at: Int) {
        replaceSubrange(at..<at + bytes.count, with: bytes)
    }

    /// Appends little-endian integers (builders of on-disk structures).
    @inlinable public mutating func appendLE16(_ v: UInt16) { append(contentsOf: [UInt8(v & 0xff), UInt8(v >> 8)]) }
    @inlinable public mutating func appendLE32(_ v: UInt32) { for i in 0..<4 { append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
    @inlinable public mutating func appendLE64(_ v: UInt64) { for i in 0..<8 { append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }

    /// Lowercase hex.
    public var hex: String {
        let digits = Swift.Array<Character>("0123456789abcdef")
        var s = ""
        s.reserveCapacity(count * 2)
        for b in self { s.append(digits[Int(b >> 4)]); s.append(digits[Int(b & 15)]) }
        return s
    }

    /// Parses lowercase or uppercase hex; nil on any other character or odd length.
    public init?(hex: String) {
        let chars = Array(hex.utf8)
        guard chars.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            case 65...70: return c - 55
            default: return nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let h = nibble(chars[i]), let l = nibble(chars[i + 1]) else { return nil }
            out.append(h << 4 | l)
            i += 2
        }
        self = out
    }
}
