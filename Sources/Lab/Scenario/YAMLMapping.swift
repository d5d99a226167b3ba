import BlockCore
import Foundation

/// A YAML mapping read key by key, so every error names the file and the full key path, and
/// keys nobody asked for are reported as unknown (a typo must not silently mean "default").
final class YAMLMapping {
    let file: String
    let path: String
    private let values: [String: Any]
    private var consumed: Set<String> = []

    init(file: String, path: String, node: Any?) throws {
        self.file = file
        self.path = path
        guard let dict = node as? [String: Any] else {
            throw ScenarioError(file: file, key: path, reason: "expected a mapping (key: value), found \(YAMLMapping.describe(node))")
        }
        values = dict
    }

    func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func error(_ key: String, _ reason: String) -> ScenarioError {
        ScenarioError(file: file, key: keyPath(key), reason: reason)
    }

    func has(_ key: String) -> Bool { values[key] != nil && !(values[key] is NSNull) }

    func raw(_ key: String) -> Any? {
        consumed.insert(key)
        let value = values[key]
        return value is NSNull ? nil : value
    }

    func string(_ key: String) throws -> String {
        guard let value = try optionalString(key) else { throw error(key, "required key is missing") }
        return value
    }

    func optionalString(_ key: String) throws -> String? {
        guard let value = raw(key) else { return nil }
        if let s = value as? String { return s }
        if let i = value as? Int { return String(i) }
        throw error(key, "expected a string, found \(YAMLMapping.describe(value))")
    }

    func integer(_ key: String) throws -> Int {
        guard let value = try optionalInteger(key) else { throw error(key, "required key is missing") }
        return value
    }

    func optionalInteger(_ key: String) throws -> Int? {
        guard let value = raw(key) else { return nil }
        if let i = value as? Int { return i }
        if let s = value as? String, let i = Int(s) { return i }
        throw error(key, "expected an integer, found \(YAMLMapping.describe(value))")
    }

    /// Sizes accept `48M`, `64K`, `1G` or a plain byte count.
    func optionalSize(_ key: String) throws -> UInt64? {
        guard let value = raw(key) else { return nil }
        if let i = value as? Int {
            guard i >= 0 else { throw error(key, "size must not be negative") }
            return UInt64(i)
        }
        if let s = value as? String {
            do { return try ByteSize.parse(s) } catch { throw self.error(key, "\(error)") }
        }
        throw error(key, "expected a size like 48M, found \(YAMLMapping.describe(value))")
    }

    func size(_ key: String) throws -> UInt64 {
        guard let value = try optionalSize(key) else { throw error(key, "required key is missing") }
        return value
    }

    func optionalStringList(_ key: String) throws -> [String]? {
        guard let value = raw(key) else { return nil }
        if let s = value as? String { return [s] }
        guard let list = value as? [Any] else {
            throw error(key, "expected a list of strings, found \(YAMLMapping.describe(value))")
        }
        return try list.enumerated().map { index, item in
            guard let s = item as? String else {
                throw ScenarioError(file: file, key: "\(keyPath(key))[\(index)]", reason: "expected a string, found \(YAMLMapping.describe(item))")
            }
            return s
        }
    }

    func stringList(_ key: String) throws -> [String] {
        guard let value = try optionalStringList(key) else { throw error(key, "required key is missing") }
        return value
    }

    func choice<T: RawRepresentable & CaseIterable>(_ key: String, default fallback: T? = nil) throws -> T where T.RawValue == String {
        guard let text = try optionalString(key) else {
            if let fallback { return fallback }
            throw error(key, "required key is missing (one of: \(T.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard let value = T(rawValue: text) else {
            throw error(key, "'\(text)' is not one of: \(T.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return value
    }

    func mapping(_ key: String) throws -> YAMLMapping? {
        guard let value = raw(key) else { return nil }
        return try YAMLMapping(file: file, path: keyPath(key), node: value)
    }

    func list(_ key: String) throws -> [Any]? {
        guard let value = raw(key) else { return nil }
        guard let list = value as? [Any] else { throw error(key, "expected a list, found \(YAMLMapping.describe(value))") }
        return list
    }

    var keys: [String] { values.keys.sorted() }

    /// Call once every known key was read: anything left is a typo or an unsupported option.
    func finish() throws {
        let unknown = Set(values.keys).subtracting(consumed).sorted()
        if let first = unknown.first {
            throw error(first, "unknown key (known keys here: \(consumed.sorted().joined(separator: ", ")))")
        }
    }

    static func describe(_ node: Any?) -> String {
        switch node {
        case nil, is NSNull: return "nothing"
        case is String: return "a string"
        case is Int: return "an integer"
        case is Bool: return "a boolean"
        case is Double: return "a number"
        case is [Any]: return "a list"
        case is [String: Any]: return "a mapping"
        default: return "an unsupported value"
        }
    }
}
