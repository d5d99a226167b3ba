import BlockCore

/// The 512-byte header of a hosted sparse extent (`SparseExtentHeader`, VMDK 1.1 §"Hosted Sparse
/// Extent Header"); also the footer of a stream-optimized file. Offsets in sectors.
///
/// | off | size | field |
/// |---|---|---|
/// | 0 | 4 | magicNumber "KDMV" |
/// | 4 | 4 | version (1; 2 with zeroed-grain GTEs; 3 stream-optimized) |
/// | 8 | 4 | flags |
/// | 12 | 8 | capacity (sectors) |
/// | 20 | 8 | grainSize (sectors) |
/// | 28 | 8 | descriptorOffset |
/// | 36 | 8 | descriptorSize |
/// | 44 | 4 | numGTEsPerGT |
/// | 48 | 8 | rgdOffset |
/// | 56 | 8 | gdOffset |
/// | 64 | 8 | overHead (sectors before the first grain) |
/// | 72 | 1 | uncleanShutdown |
/// | 73 | 4 | '\n', ' ', '\r', '\n' (newline detection) |
/// | 77 | 2 | compressAlgorithm |
/// | 79 | 433 | zero |
public struct VMDKSparseHeader: Sendable, Equatable {
    public var version: UInt32 = 1
    public var flags: UInt32 = VMDK.flagNewlineTest | VMDK.flagRedundantGrainTable
    public var capacity: UInt64 = 0
    public var grainSize: UInt64 = VMDK.defaultGrainSectors
    public var descriptorOffset: UInt64 = 0
    public var descriptorSize: UInt64 = 0
    public var numGTEsPerGT: UInt32 = UInt32(VMDK.gtesPerGT)
    public var rgdOffset: UInt64 = 0
    public var gdOffset: UInt64 = 0
    public var overhead: UInt64 = 0
    public var uncleanShutdown: UInt8 = 0
    public var newlineChars: [UInt8] = [0x0A, 0x20, 0x0D, 0x0A]
    public var compressAlgorithm: UInt16 = 0

    public init() {}

    public static let size = 512

    public var hasRedundantGrainTable: Bool { flags & VMDK.flagRedundantGrainTable != 0 }
    public var isCompressed: Bool { flags & VMDK.flagCompressed != 0 }
    public var hasMarkers: Bool { flags & VMDK.flagMarkers != 0 }
    public var zeroedGrainGTE: Bool { flags & VMDK.flagZeroedGrainGTE != 0 }

    public func serialize() -> [UInt8] {
        var b = VMDK.magic
        b.appendLE32(version)
        b.appendLE32(flags)
        b.appendLE64(capacity)
        b.appendLE64(grainSize)
        b.appendLE64(descriptorOffset)
        b.appendLE64(descriptorSize)
        b.appendLE32(numGTEsPerGT)
        b.appendLE64(rgdOffset)
        b.appendLE64(gdOffset)
        b.appendLE64(overhead)
        b.append(uncleanShutdown)
        b += newlineChars
        b.appendLE16(compressAlgorithm)
        b += [UInt8](repeating: 0, count: Self.size - b.count)
        return b
    }

    /// Parses and checks the fields that do not depend on the file's size (the reader checks
    /// placement). `at` is the header's file offset, for errors.
    public static func parse(_ bytes: [UInt8], at base: UInt64, name: String = "sparse header") throws -> VMDKSparseHeader {
        let v = ByteView(bytes, base: base, format: VMDK.errorName, structure: name)
        guard try v.slice(0, 4) == VMDK.magic else { throw v.error(at: 0, "bad magic (not \"KDMV\")") }
        var h = VMDKSparseHeader()
        h.version = try v.u32(4)
        h.flags = try v.u32(8)
        h.capacity = try v.u64(12)
        h.grainSize = try v.u64(20)
        h.descriptorOffset = try v.u64(28)
        h.descriptorSize = try v.u64(36)
        h.numGTEsPerGT = try v.u32(44)
        h.rgdOffset = try v.u64(48)
        h.gdOffset = try v.u64(56)
        h.overhead = try v.u64(64)
        h.uncleanShutdown = try v.u8(72)
        h.newlineChars = try v.slice(73, 4)
        h.compressAlgorithm = try v.u16(77)
        guard (1...3).contains(h.version) else { throw v.error(at: 4, "unsupported version \(h.version)") }
        if h.flags & VMDK.flagNewlineTest != 0, h.newlineChars != [0x0A, 0x20, 0x0D, 0x0A] {
            throw v.error(at: 73, "newline detection characters are \(h.newlineChars.hex), not 0a200d0a: the file was transferred in text mode")
        }
        guard h.grainSize >= 1, h.grainSize <= VMDK.maxGrainSectors, h.grainSize & (h.grainSize - 1) == 0 else {
            throw v.error(at: 20, "grain size \(h.grainSize) sectors is not a power of two in 1…\(VMDK.maxGrainSectors)")
        }
        guard h.numGTEsPerGT >= 1, UInt64(h.numGTEsPerGT) <= VMDK.maxGTEsPerGT else {
            throw v.error(at: 44, "\(h.numGTEsPerGT) entries per grain table (1…\(VMDK.maxGTEsPerGT) accepted)")
        }
        guard h.capacity <= VMDK.maxCapacitySectors else {
            throw v.error(at: 12, "capacity \(h.capacity) sectors is beyond the \(VMDK.maxCapacitySectors)-sector limit")
        }
        if h.isCompressed, h.compressAlgorithm != VMDK.compressionDeflate {
            throw v.error(at: 77, "compressed grains with unknown algorithm \(h.compressAlgorithm)")
        }
        return h
    }

    /// Grains covering the capacity.
    public var grainCount: UInt64 { (capacity + grainSize - 1) / grainSize }
    /// Grain directory entries (one per grain table).
    public var gdEntries: UInt64 { (grainCount + UInt64(numGTEsPerGT) - 1) / UInt64(numGTEsPerGT) }
}

/// A stream-optimized marker (one sector): `val` (u64), `size` (u32, 0 for metadata markers,
/// the compressed length for a grain), `type` (u32, metadata markers only).
public struct VMDKMarker: Sendable, Equatable {
    public var value: UInt64
    public var type: VMDK.MarkerType

    public init(value: UInt64, type: VMDK.MarkerType) { self.value = value; self.type = type }

    public func serialize() -> [UInt8] {
        var b: [UInt8] = []
        b.appendLE64(value)
        b.appendLE32(0)
        b.appendLE32(type.rawValue)
        return b + [UInt8](repeating: 0, count: 512 - b.count)
    }

    /// A metadata marker (size 0) of a known type.
    public static func parse(_ bytes: [UInt8], at base: UInt64) throws -> VMDKMarker {
        let v = ByteView(bytes, base: base, format: VMDK.errorName, structure: "marker")
        let value = try v.u64(0), size = try v.u32(8), raw = try v.u32(12)
        guard size == 0 else { throw v.error(at: 8, "a grain marker (size \(size)) where a metadata marker was expected") }
        guard let t = VMDK.MarkerType(rawValue: raw) else { throw v.error(at: 12, "unknown marker type \(raw)") }
        return VMDKMarker(value: value, type: t)
    }
}
