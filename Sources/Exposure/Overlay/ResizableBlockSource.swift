import BlockCore

/// A writable source whose size can change between `minSize` and `maxSize`: an exposed file that a
/// writer extends (a VHDX writer allocates payload blocks by growing the file). `size` is the
/// current logical size; the front-end reports it and grows through `writeExtending`/`resize`.
public protocol ResizableBlockSource: WritableBlockSource {
    /// The smallest size `resize` accepts (the base's size: the exposed bytes are never cut).
    var minSize: UInt64 { get }
    /// The largest size the source may reach (a bound so a runaway writer is stopped, not the disk filled).
    var maxSize: UInt64 { get }
    /// Sets the logical size. Bytes past the old size read as zeros; the change is durable
    /// (survives a crash) when this returns.
    func resize(to newSize: UInt64) throws
    /// Writes, first growing the size to cover the range if it ends past the current size.
    func writeExtending(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws
}

/// Why a size change was refused.
public enum ResizeError: Error, CustomStringConvertible, Equatable {
    case belowMinimum(requested: UInt64, minimum: UInt64)
    case beyondLimit(requested: UInt64, limit: UInt64)

    public var description: String {
        switch self {
        case let .belowMinimum(requested, minimum):
            return "size \(requested) is below \(minimum), the size of the exposed file's own bytes"
        case let .beyondLimit(requested, limit):
            return "size \(requested) is beyond the growth limit \(limit)"
        }
    }
}
