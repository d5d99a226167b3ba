import BlockCore
import Foundation

/// SHA-256 of files and of strings, hex-encoded, and seed-derived identifiers.
public enum Digest {
    public static func file(_ url: URL) throws -> String {
        let source = try RawFile(path: url.path)
        return try SHA256.hash(source).hex
    }

    public static func string(_ text: String) -> String { SHA256.hash(Array(text.utf8)).hex }

    /// Deterministic bytes for identifier `label` of a scenario seed.
    static func derivedBytes(seed: UInt64, _ label: String, count: Int) -> [UInt8] {
        var out: [UInt8] = []
        var counter = 0
        while out.count < count {
            out += SHA256.hash(Array("bootlab-lab:\(seed):\(label):\(counter)".utf8))
            counter += 1
        }
        return Array(out.prefix(count))
    }

    /// A version-4-shaped UUID string derived from the seed (file-system UUIDs, hash seeds).
    static func uuid(seed: UInt64, _ label: String) -> String {
        var b = derivedBytes(seed: seed, label, count: 16)
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        let h = b.hex
        let c = Array(h)
        return "\(String(c[0..<8]))-\(String(c[8..<12]))-\(String(c[12..<16]))-\(String(c[16..<20]))-\(String(c[20..<32]))"
    }
}
