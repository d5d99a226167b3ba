/// What a range of a block source holds, as far as its layer knows.
///
/// `zero` ranges read as zeros and are known to be zeros (a VHDX ZERO block, a zero-marked
/// backup block); `absent` ranges were never written (a sparse hole, an unallocated VHDX block)
/// and also read as zeros unless a lower layer supplies them. Upper layers keep both sparse.
public enum ExtentKind: String, Sendable, Hashable, Codable {
    case data
    case zero
    case absent

    /// True when the range's bytes are all zero without reading them.
    public var readsAsZero: Bool { self != .data }
}

/// A contiguous range with one kind.
public struct Extent: Sendable, Hashable, Codable, CustomStringConvertible {
    public var offset: UInt64
    public var length: UInt64
    public var kind: ExtentKind

    public init(offset: UInt64, length: UInt64, kind: ExtentKind) {
        self.offset = offset
        self.length = length
        self.kind = kind
    }

    public var end: UInt64 { offset + length }
    public var description: String { "\(kind)[\(offset)+\(length)]" }
}

/// Everything that holds disk bytes: a size, positional reads, and an extent map.
///
/// The one protocol of the architecture (nbdkit's plugin interface is the model): parsers produce
/// block sources, views consume them, layers stack them, front-ends serve them. Implementations
/// must be safe to call from many threads at once.
public protocol BlockSource: Sendable {
    /// Size in bytes. Reads never extend past it.
    var size: UInt64 { get }

    /// Fills `buffer` entirely with the bytes at `offset`. `offset + buffer.count` must not exceed
    /// `size` (throws `BlockSourceError.outOfRange` otherwise). Never returns short.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws

    /// The extents covering `range` (clamped to `size`), in order, contiguous, merged where
    /// adjacent extents have the same kind. The default reports everything as data.
    func extents(in range: Range<UInt64>) throws -> [Extent]
}

/// A block source that also takes writes. Writes must be durable once `flush()` returns.
public protocol WritableBlockSource: BlockSource {
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws
    func flush() throws
}

public enum BlockSourceError: Error, CustomStringConvertible, Equatable {
    case outOfRange(offset: UInt64, length: UInt64, size: UInt64)
    case readOnly(String)

    public var description: String {
        switch self {
        case let .outOfRange(offset, length, size):
            return "read of \(length) bytes at offset \(offset) is past the end (size \(size))"
        case let .readOnly(what):
            return "\(what) is read-only"
        }
    }
}

extension BlockSource {
    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        return r.isEmpty ? [] : [Extent(offset: r.lowerBound, length: UInt64(r.count), kind: .data)]
    }

    /// All extents of the source.
    public func allExtents() throws -> [Extent] { try extents(in: 0..<size) }

    /// Reads `count` bytes at `offset` into a new array.
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(at: offset, into: $0) }
        return out
    }

    /// Throws unless `offset ..< offset+length` lies within the source.
    @inlinable
    public func checkRange(_ offset: UInt64, _ length: Int) throws {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(length))
        if overflow || end > size {
            throw BlockSourceError.outOfRange(offset: offset, length: UInt64(length), size: size)
        }
    }
}

/// Merges adjacent extents of equal kind and drops empty ones.
public func coalesce(_ extents: [Extent]) -> [Extent] {
    var out: [Extent] = []
    out.reserveCapacity(extents.count)
    for e in extents where e.length > 0 {
        if var last = out.last, last.kind == e.kind, last.end == e.offset {
            last.length += e.length
            out[out.count - 1] = last
        } else {
            out.append(e)
        }
    }
    return out
}
