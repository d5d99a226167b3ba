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
/// cache, or none on file systems that share extents) and the FUSE front-end can splice them to
/// the reader (one copy, by the kernel, instead of two through this process). An optional fast
/// path: `read(at:into:)` stays the definition of the bytes.
///
/// Implemented by `RawFile` and passed through by the layers and views that map ranges without
/// changing bytes (`CountingSource`, the exposure's read-only layer, `PaddedSource`, the payload
/// of `VHDXView`, `VDIView` and `VHDView`); every layer that changes, composes or overlays bytes
/// does not conform (or answers nil), so its reads keep the copy path. A file named here is open
/// as long as the source; its bytes at that offset are what `read` returns.
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
