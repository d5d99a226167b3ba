import BlockCore

/// A block source extended with zeros up to `size` (≥ the base size). The padding reads as
/// zeros and is reported `.absent`, so it never allocates anything downstream.
///
/// `convert` uses it to round a raw input up to a whole logical sector, as qemu-img does
/// (a VHDX virtual size must be a multiple of the logical sector size, MS-VHDX 2.6.2.2).
public struct PaddedSource: BlockSource {
    public let base: any BlockSource
    public let size: UInt64

    public init(_ base: any BlockSource, size: UInt64) {
        precondition(size >= base.size, "padding cannot shrink a source")
        self.base = base
        self.size = size
    }

    /// `base` rounded up to a multiple of `alignment` (the source itself when already aligned).
    public static func roundedUp(_ base: any BlockSource, to alignment: UInt64) -> any BlockSource {
        let padded = (base.size + alignment - 1) / alignment * alignment
        return padded == base.size ? base : PaddedSource(base, size: padded)
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        let inBase = offset < base.size ? Int(min(UInt64(buffer.count), base.size - offset)) : 0
        if inBase > 0 { try base.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<inBase])) }
        if inBase < buffer.count {
            (buffer.baseAddress! + inBase).initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count - inBase)
        }
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out = try base.extents(in: r.clamped(to: 0..<base.size))
        let padLo = max(r.lowerBound, base.size)
        if padLo < r.upperBound { out.append(Extent(offset: padLo, length: r.upperBound - padLo, kind: .absent)) }
        return coalesce(out)
    }
}
