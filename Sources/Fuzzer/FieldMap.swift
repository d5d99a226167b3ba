import BlockCore

/// Byte order of a field.
public enum Endian: Sendable { case little, big }

/// What a field means, which decides how it is mutated (boundaries, EOF, overlaps…).
public enum FieldMeaning: String, Sendable, CaseIterable {
    case size, count, offset, guid, sequence, signature, flags, state, version, checksum, other
}

/// One field of one structure, at an absolute file offset.
public struct Field: Sendable, Equatable {
    public var structure: String
    public var name: String
    public var offset: Int
    public var width: Int
    public var meaning: FieldMeaning
    public var endian: Endian
    /// Bytes per unit of the value (offsets in sectors: 512; in MiB: 1 MiB), for EOF-aware values.
    public var unit: UInt64

    public init(_ structure: String, _ name: String, _ offset: Int, _ width: Int, _ meaning: FieldMeaning,
                _ endian: Endian = .little, unit: UInt64 = 1) {
        self.structure = structure; self.name = name; self.offset = offset; self.width = width
        self.meaning = meaning; self.endian = endian; self.unit = unit
    }

    public var label: String { "\(structure).\(name)" }
}

/// How a checksum is computed.
public enum ChecksumKind: String, Sendable {
    /// CRC-32C with the field zeroed (VHDX, .bli).
    case crc32c
    /// CRC-32 (IEEE) with the field zeroed (GPT).
    case crc32
    /// One's complement of the byte sum with the field zeroed, big-endian (VHD footer, dynamic header).
    case onesComplement
    /// SHA-256 of the covered bytes, the first `width` bytes stored (.bli index and header digests).
    case sha256
}

/// A checksum: where it is stored and what it covers. Recomputed in map order (inner first).
public struct ChecksumSpec: Sendable, Equatable {
    public var name: String
    public var kind: ChecksumKind
    public var covered: Range<Int>
    public var field: Int
    public var width: Int
    public var endian: Endian

    public init(_ name: String, _ kind: ChecksumKind, covered: Range<Int>, field: Int, width: Int = 4, endian: Endian = .little) {
        self.name = name; self.kind = kind; self.covered = covered; self.field = field; self.width = width; self.endian = endian
    }
}

/// What the fuzzer knows about one file: its fields, its checksums (in recompute order) and the
/// offsets where structures start and end (truncation points).
public struct StructureMap: Sendable {
    public var fields: [Field] = []
    public var checksums: [ChecksumSpec] = []
    public var boundaries: [Int] = []
    public init() {}

    public mutating func add(_ f: Field) { fields.append(f) }
    public mutating func structure(_ range: Range<Int>) { boundaries.append(range.lowerBound); boundaries.append(range.upperBound) }
}

extension [UInt8] {
    /// The unsigned value of `width` (≤ 8) bytes at `at`; 0 past the end.
    public func value(at: Int, width: Int, endian: Endian) -> UInt64 {
        guard at >= 0, width <= 8, at + width <= count else { return 0 }
        var v: UInt64 = 0
        for i in 0..<width {
            let b = UInt64(self[endian == .little ? at + width - 1 - i : at + i])
            v = v << 8 | b
        }
        return v
    }

    /// Stores the low `width` bytes of `v` at `at` (ignored past the end).
    public mutating func setValue(_ v: UInt64, at: Int, width: Int, endian: Endian) {
        guard at >= 0, width <= 8, at + width <= count else { return }
        for i in 0..<width {
            let b = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))
            self[endian == .little ? at + i : at + width - 1 - i] = b
        }
    }
}

/// Recomputes checksums so a mutant passes integrity checks and reaches deeper code.
public enum ChecksumFixer {
    /// Recomputes every checksum whose field and covered bytes lie inside `bytes`; returns the names fixed.
    @discardableResult
    public static func fix(_ bytes: inout [UInt8], _ specs: [ChecksumSpec]) -> [String] {
        var fixed: [String] = []
        for s in specs {
            guard s.covered.lowerBound >= 0, s.covered.upperBound <= bytes.count, s.field + s.width <= bytes.count else { continue }
            let inside = s.covered.contains(s.field)
            if inside { for i in 0..<s.width { bytes[s.field + i] = 0 } }
            let covered = Array(bytes[s.covered])
            switch s.kind {
            case .crc32c: bytes.setValue(UInt64(CRC32C.checksum(covered)), at: s.field, width: 4, endian: s.endian)
            case .crc32: bytes.setValue(UInt64(CRC32.checksum(covered)), at: s.field, width: 4, endian: s.endian)
            case .onesComplement:
                var sum: UInt32 = 0
                for b in covered { sum &+= UInt32(b) }
                bytes.setValue(UInt64(~sum), at: s.field, width: 4, endian: s.endian)
            case .sha256:
                let d = SHA256.hash(covered)
                for i in 0..<Swift.min(s.width, d.count) { bytes[s.field + i] = d[i] }
            }
            fixed.append(s.name)
        }
        return fixed
    }

    /// False when a later checksum's field lies inside what an earlier one covers (a mutant whose
    /// structures overlap): then they cannot all hold at once.
    public static func consistent(_ specs: [ChecksumSpec]) -> Bool {
        for (i, a) in specs.enumerated() {
            for b in specs[(i + 1)...] where b.field < a.covered.upperBound && b.field + b.width > a.covered.lowerBound && b.field != a.field {
                return false
            }
            for b in specs[(i + 1)...] where b.field == a.field { return false }
        }
        return true
    }

    /// True when every checksum inside `bytes` holds.
    public static func holds(_ bytes: [UInt8], _ specs: [ChecksumSpec]) -> Bool {
        var copy = bytes
        fix(&copy, specs)
        return copy == bytes
    }
}

/// A file offset or length read from an untrusted field, bounded (1 TiB) so arithmetic on it
/// cannot overflow: the maps parse mutants too.
@inline(__always) func bounded(_ v: UInt64) -> Int { Int(min(v, 1 << 40)) }
