import CHivex
#if canImport(Glibc)
import Glibc
#endif

public struct HiveError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var errno: Int32
    public var description: String { "hivex \(operation): \(String(cString: strerror(errno)))" }
}

/// A registry hive file opened for writing with hivex. Not thread-safe (one owner).
public final class Hive {
    private let h: OpaquePointer
    public let path: String

    public init(path: String, writable: Bool = true) throws {
        guard let h = hivex_open(path, writable ? CH_OPEN_WRITE : 0) else { throw HiveError(operation: "open \(path)", errno: errno) }
        self.h = h
        self.path = path
    }

    deinit { hivex_close(h) }

    public var root: Int { hivex_root(h) }

    /// The child named `name` (case-insensitive, as Windows), or nil.
    public func child(_ node: Int, _ name: String) -> Int? {
        let c = hivex_node_get_child(h, node, name)
        return c == 0 ? nil : c
    }

    /// The node at `path` ("ControlSet001\Services\atapi"), or nil.
    public func node(_ path: String) -> Int? {
        var n = root
        for part in path.split(separator: "\\") {
            guard let c = child(n, String(part)) else { return nil }
            n = c
        }
        return n
    }

    /// The node at `path`, creating missing keys.
    public func ensureNode(_ path: String) throws -> Int {
        var n = root
        for part in path.split(separator: "\\") {
            if let c = child(n, String(part)) { n = c; continue }
            let c = hivex_node_add_child(h, n, String(part))
            guard c != 0 else { throw HiveError(operation: "add_child \(part)", errno: errno) }
            n = c
        }
        return n
    }

    public func children(_ node: Int) -> [(name: String, node: Int)] {
        guard let list = hivex_node_children(h, node) else { return [] }
        defer { free(list) }
        var out: [(String, Int)] = []
        var i = 0
        while list[i] != 0 {
            if let n = hivex_node_name(h, list[i]) { out.append((String(cString: n), list[i])); free(n) }
            i += 1
        }
        return out
    }

    public func valueNames(_ node: Int) -> [String] {
        guard let list = hivex_node_values(h, node) else { return [] }
        defer { free(list) }
        var out: [String] = []
        var i = 0
        while list[i] != 0 {
            if let k = hivex_value_key(h, list[i]) { out.append(String(cString: k)); free(k) }
            i += 1
        }
        return out
    }

    /// (type, raw bytes) of a value, or nil when absent.
    public func value(_ node: Int, _ key: String) -> (type: UInt32, data: [UInt8])? {
        let v = hivex_node_get_value(h, node, key)
        guard v != 0 else { return nil }
        var t = hive_type(0)
        var len = 0
        guard let p = hivex_value_value(h, v, &t, &len) else { return nil }
        defer { free(p) }
        return (t.rawValue, p.withMemoryRebound(to: UInt8.self, capacity: len) { Array(UnsafeBufferPointer(start: $0, count: len)) })
    }

    /// Sets a value; returns false when it already held exactly these bytes and type.
    @discardableResult
    public func set(_ node: Int, _ key: String, type: UInt32, _ data: [UInt8]) throws -> Bool {
        if let old = value(node, key), old.type == type, old.data == data { return false }
        var bytes = data.map { CChar(bitPattern: $0) } + [0]
        let rc = key.withCString { k in
            bytes.withUnsafeMutableBufferPointer { b in
                var v = hive_set_value(key: UnsafeMutablePointer(mutating: k), t: hive_type(rawValue: type), len: data.count, value: b.baseAddress)
                return hivex_node_set_value(h, node, &v, 0)
            }
        }
        guard rc == 0 else { throw HiveError(operation: "set_value \(key)", errno: errno) }
        return true
    }

    public func commit() throws {
        guard hivex_commit(h, nil, 0) == 0 else { throw HiveError(operation: "commit \(path)", errno: errno) }
    }
}

public enum RegistryType {
    public static let sz: UInt32 = 1
    public static let expandSz: UInt32 = 2
    public static let binary: UInt32 = 3
    public static let dword: UInt32 = 4

    public static func string(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        for u in s.utf16 + [0] { out.append(UInt8(u & 0xFF)); out.append(UInt8(u >> 8)) }
        return out
    }

    public static func dword(_ v: UInt32) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8(v >> 24)] }
}
