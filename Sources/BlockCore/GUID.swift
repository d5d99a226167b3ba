/// A 16-byte GUID kept in its on-disk (Microsoft mixed-endian) byte order: Data1 (u32),
/// Data2 (u16) and Data3 (u16) little-endian, Data4 as is. `2DC27766-F623-4200-9D64-115E9BFD4A08`
/// is stored as `66 77 c2 2d 23 f6 00 42 9d 64 11 5e 9b fd 4a 08` (vhdx-notes §0).
public struct GUID: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    public var bytes: [UInt8]

    public static let zero = GUID(bytes: [UInt8](repeating: 0, count: 16))

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 16, "a GUID has 16 bytes")
        self.bytes = bytes
    }

    /// Parses `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`, with or without braces, any case.
    public init?(_ text: String) {
        var t = Substring(text)
        if t.hasPrefix("{") && t.hasSuffix("}") { t = t.dropFirst().dropLast() }
        let parts = t.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 5, parts.map(\.count) == [8, 4, 4, 4, 12],
              let d1 = [UInt8](hex: String(parts[0])), let d2 = [UInt8](hex: String(parts[1])),
              let d3 = [UInt8](hex: String(parts[2])), let d4a = [UInt8](hex: String(parts[3])),
              let d4b = [UInt8](hex: String(parts[4])) else { return nil }
        self.bytes = d1.reversed() + d2.reversed() + d3.reversed() + d4a + d4b
    }

    /// A deterministic version-4-shaped GUID: the first 16 bytes of SHA-256(seed ‖ label), with the
    /// version and variant bits set in on-disk order (vhdx-notes §9a). No clock, no RNG.
    public static func derived(seed: [UInt8], label: String) -> GUID {
        var b = Array(SHA256.hash(seed + Array(label.utf8)).prefix(16))
        b[7] = (b[7] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        return GUID(bytes: b)
    }

    public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }

    /// Standard text form, uppercase, no braces.
    public var description: String {
        let d1 = Array(bytes[0..<4].reversed()).hex
        let d2 = Array(bytes[4..<6].reversed()).hex
        let d3 = Array(bytes[6..<8].reversed()).hex
        let d4 = Array(bytes[8..<10]).hex
        let d5 = Array(bytes[10..<16]).hex
        return "\(d1)-\(d2)-\(d3)-\(d4)-\(d5)".uppercased()
    }

    /// `{lowercase}`: the form VHDX's parent_linkage uses.
    public var bracedLowercase: String { "{" + description.lowercased() + "}" }

    public static func < (a: GUID, b: GUID) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }

    public init(from decoder: Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        guard let g = GUID(s) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a GUID: \(s)"))
        }
        self = g
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
