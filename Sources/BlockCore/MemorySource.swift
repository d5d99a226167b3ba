/// An in-memory block source (tests, small synthesized regions). Writable; thread-safe.
public final class MemorySource: WritableBlockSource, @unchecked Sendable {
    // @unchecked: `bytes` is only touched under `lock`.
    private let lock = NSLockish()
    private var bytes: [UInt8]
    private let zeroRanges: [Range<UInt64>]

    /// `zeroRanges` are reported as `.zero` extents (they must hold zeros).
    public init(_ bytes: [UInt8], zeroRanges: [Range<UInt64>] = []) {
        self.bytes = bytes
        self.zeroRanges = zeroRanges
    }

    public var size: UInt64 { lock.withLock { UInt64(bytes.count) } }
    public var contents: [UInt8] { lock.withLock { bytes } }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        lock.withLock {
            bytes.withUnsafeBytes { src in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[Int(offset)..<Int(offset) + buffer.count]))
            }
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        lock.withLock {
            bytes.withUnsafeMutableBytes { dst in
                UnsafeMutableRawBufferPointer(rebasing: dst[Int(offset)..<Int(offset) + buffer.count]).copyMemory(from: buffer)
            }
        }
    }

    public func flush() throws {}

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out: [Extent] = []
        var pos = r.lowerBound
        for z in zeroRanges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            let zc = z.clamped(to: pos..<r.upperBound)
            guard !zc.isEmpty else { continue }
            if zc.lowerBound > pos { out.append(Extent(offset: pos, length: zc.lowerBound - pos, kind: .data)) }
            out.append(Extent(offset: zc.lowerBound, length: UInt64(zc.count), kind: .zero))
            pos = zc.upperBound
        }
        if pos < r.upperBound { out.append(Extent(offset: pos, length: r.upperBound - pos, kind: .data)) }
        return coalesce(out)
    }
}

/// A source of `size` zero bytes, reported as one extent of `kind` (zero or absent).
public struct ZeroSource: BlockSource {
    public let size: UInt64
    public let kind: ExtentKind
    public init(size: UInt64, kind: ExtentKind = .zero) { self.size = size; self.kind = kind }
    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        if buffer.count > 0 { buffer.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: buffer.count) }
    }
    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        return r.isEmpty ? [] : [Extent(offset: r.lowerBound, length: UInt64(r.count), kind: kind)]
    }
}
