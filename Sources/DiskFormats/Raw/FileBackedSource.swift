import BlockCore

/// Where some of a block source's bytes live when they are a plain copy of an open file's bytes.
public enum FileSpan: Sendable, Hashable {
    /// `length` bytes at `offset` of the open file descriptor `fd`.
    case file(fd: Int32, offset: UInt64, length: UInt64)
    /// `length` bytes that read as zeros.
    case zeros(length: UInt64)

    public var length: UInt64 {
        switch self {
        case let .file(_, _, n), let .zeros(n): return n
        }
    }
}

/// A block source that can say which of its ranges are byte-for-byte copies of file ranges, so
/// a writer can copy them inside the kernel (`copy_file_range(2)`: one copy through the page
/// cache, or none on file systems that share extents) instead of reading into user space and
/// writing back out. An optional fast path: `read(at:into:)` stays the definition of the bytes.
///
/// Implemented by `RawFile` and passed through by the views that map ranges without changing
/// bytes (`PaddedSource`, `VHDXView`'s payload).
public protocol FileBackedSource: BlockSource {
    /// The bytes of `range` (within `size`) as spans, in order and covering it exactly, or nil
    /// when any part of it is not a file range or zeros (synthesized structures).
    func fileSpans(in range: Range<UInt64>) -> [FileSpan]?
}

extension RawFile: FileBackedSource {
    public func fileSpans(in range: Range<UInt64>) -> [FileSpan]? {
        guard range.upperBound <= size else { return nil }
        return range.isEmpty ? [] : [.file(fd: fd, offset: range.lowerBound, length: UInt64(range.count))]
    }
}

extension PaddedSource: FileBackedSource {
    public func fileSpans(in range: Range<UInt64>) -> [FileSpan]? {
        guard range.upperBound <= size, let fb = base as? any FileBackedSource else { return nil }
        var out: [FileSpan] = []
        if range.lowerBound < base.size {
            guard let spans = fb.fileSpans(in: range.lowerBound..<min(range.upperBound, base.size)) else { return nil }
            out = spans
        }
        let padLo = max(range.lowerBound, base.size)
        if padLo < range.upperBound { out.append(.zeros(length: range.upperBound - padLo)) }
        return out
    }
}
