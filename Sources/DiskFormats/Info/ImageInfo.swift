import BlockCore

/// A value in an info report: typed for JSON, printable for humans.
public indirect enum InfoValue: Sendable, Equatable, Encodable {
    case string(String)
    case integer(UInt64)
    /// A byte count: an integer in JSON, "1 GiB (1073741824 bytes)" for humans.
    case bytes(UInt64)
    case bool(Bool)
    case object([InfoField])
    case null

    public func encode(to encoder: Encoder) throws {
        switch self {
        case let .string(s): var c = encoder.singleValueContainer(); try c.encode(s)
        case let .integer(n), let .bytes(n): var c = encoder.singleValueContainer(); try c.encode(n)
        case let .bool(b): var c = encoder.singleValueContainer(); try c.encode(b)
        case .null: var c = encoder.singleValueContainer(); try c.encodeNil()
        case let .object(fields):
            var c = encoder.container(keyedBy: InfoKey.self)
            for f in fields { try c.encode(f.value, forKey: InfoKey(f.key)) }
        }
    }

    public var text: String {
        switch self {
        case let .string(s): return s
        case let .integer(n): return String(n)
        case let .bytes(n): return "\(ByteSize.format(n)) (\(n) bytes)"
        case let .bool(b): return b ? "yes" : "no"
        case .null: return "-"
        case let .object(fields): return fields.map { "\($0.key)=\($0.value.text)" }.joined(separator: ", ")
        }
    }
}

public struct InfoField: Sendable, Equatable {
    public var key: String
    public var value: InfoValue
    public init(_ key: String, _ value: InfoValue) { self.key = key; self.value = value }
}

struct InfoKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ s: String) { stringValue = s }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// What `info` prints for one file: its format and ordered fields.
public struct ImageInfo: Sendable, Equatable, Encodable {
    public var fields: [InfoField]

    public init(format: String, path: String, fields: [InfoField]) {
        self.fields = [InfoField("format", .string(format)), InfoField("path", .string(path))] + fields
    }

    public subscript(key: String) -> InfoValue? { fields.first { $0.key == key }?.value }

    public func encode(to encoder: Encoder) throws { try InfoValue.object(fields).encode(to: encoder) }

    /// `key: value` lines, nested objects indented.
    public var text: String {
        func lines(_ fs: [InfoField], _ indent: String) -> [String] {
            fs.flatMap { f -> [String] in
                if case let .object(sub) = f.value { return ["\(indent)\(f.key.replacingUnderscores()):"] + lines(sub, indent + "  ") }
                return ["\(indent)\(f.key.replacingUnderscores()): \(f.value.text)"]
            }
        }
        return lines(fields, "").joined(separator: "\n")
    }
}

extension String {
    func replacingUnderscores() -> String { String(map { $0 == "_" ? " " : $0 }) }
}

/// One format `info` can describe. Probes are tried in order on the file's first bytes; the
/// first that claims them describes the file. Add a format by adding a probe to the list the
/// CLI passes to `ImageInfoProbes.describe`.
public protocol ImageInfoProbe: Sendable {
    var formatName: String { get }
    /// True when `head` (the first up-to-4 KiB of the file) is this format's magic.
    func matches(head: [UInt8]) -> Bool
    func info(path: String) throws -> ImageInfo
}

public enum ImageInfoProbes {
    /// Describes the file at `path` with the first matching probe (the caller's, e.g. backup
    /// images and plugin files), else the registered format its content names, else as raw.
    public static func describe(path: String, probes: [any ImageInfoProbe]) throws -> ImageInfo {
        let f = try RawFile(path: path)
        let head = try f.read(at: 0, count: Int(min(4096, f.size)))
        for p in probes where p.matches(head: head) { return try p.info(path: path) }
        var info: ImageInfo
        let disk: (any BlockSource)?
        if let driver = try DiskFormatRegistry.detect(path: path) {
            info = try driver.info(path: path)
            disk = try? driver.open(path: path)
        } else {
            info = try RawInfoProbe().info(path: path)
            disk = f
        }
        if let disk, let table = PartitionTableInfo.field(of: disk) { info.fields.append(table) }
        return info
    }
}

/// Any file not claimed by a format: its size and how much of it is allocated.
public struct RawInfoProbe: ImageInfoProbe {
    public init() {}
    public var formatName: String { "raw" }
    public func matches(head: [UInt8]) -> Bool { true }
    public func info(path: String) throws -> ImageInfo {
        let f = try RawFile(path: path)
        let allocated = try f.allExtents().filter { $0.kind == .data }.reduce(UInt64(0)) { $0 + $1.length }
        return ImageInfo(format: "raw", path: path, fields: [
            InfoField("virtual_size", .bytes(f.size)),
            InfoField("file_size", .bytes(f.size)),
            InfoField("allocated_bytes", .bytes(allocated)),
        ])
    }
}
