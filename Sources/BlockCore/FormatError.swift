/// A structural problem in untrusted input: which structure, where, and why.
///
/// Every parser reports bad input with this shape, so messages read the same across formats:
/// `BAT entry 17 at 0x300088: offset 0x7ff00000 past end of file`.
public struct FormatError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The format ("VHDX", "backup image", "MBR", …).
    public var format: String
    /// The structure inside the format ("header 1", "BAT entry 17", …).
    public var structure: String
    /// Byte offset of the structure (or the offending field) in the file.
    public var offset: UInt64
    public var reason: String

    public init(_ format: String, _ structure: String, at offset: UInt64, _ reason: String) {
        self.format = format
        self.structure = structure
        self.offset = offset
        self.reason = reason
    }

    public var description: String {
        "\(format): \(structure) at 0x\(String(offset, radix: 16)): \(reason)"
    }
}

/// An operating-system error on a named file.
public struct IOError: Error, CustomStringConvertible, Equatable, Sendable {
    public var operation: String
    public var path: String
    public var errno: Int32

    public init(_ operation: String, path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    public var description: String {
        "\(operation) \(path): \(String(cString: strerror(errno)))"
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
