import BlockCore

/// How a plugin knows its external source is still the one it was exposed from, without knowing
/// the source's format (docs/bring-your-own-format.md, "Identity"):
///
/// - always: the size, and the SHA-256 of `sampleCount` ranges of `sampleLength` bytes at fixed
///   positions (the first and last range, the rest evenly spaced, all derived from the size
///   alone: deterministic, no randomness) — read at every open;
/// - `--verify-source`: the SHA-256 of the whole source, recomputed at every open (reads it all);
/// - `--source-id ID`: a label the user vouches for (e.g. the backup product's own backup ID),
///   recorded and compared with the `--source-id` given when the plugin is opened, if any.
///
/// Sampling catches a different size, a different backup behind the same command, and any
/// change touching a sampled range; it cannot catch an edit confined to unsampled bytes.
public struct SourceIdentity: Codable, Sendable, Equatable {
    public var size: UInt64
    /// SHA-256 (hex) of the tag, the size and each sample (offset, length, bytes).
    public var sampleDigest: String
    public var sampleCount: Int
    public var sampleLength: UInt64
    /// SHA-256 (hex) of every byte of the source, when exposed with `--verify-source`.
    public var fullDigest: String?
    /// The user's identifier, when exposed with `--source-id`.
    public var id: String?

    public static let defaultSampleCount = 64
    public static let defaultSampleLength: UInt64 = 64 << 10
    public static let maxSampleCount = 4096
    static let tag = Array("bootlab source samples v1".utf8)

    /// The sampled ranges for a source of `size` bytes.
    public static func samplePositions(size: UInt64, count requested: Int, length: UInt64) -> [Range<UInt64>] {
        // Bounded whatever a pointer says (the check refuses more than this anyway).
        let count = min(requested, maxSampleCount)
        guard size > 0, count > 0, length > 0 else { return [] }
        let len = min(length, size)
        if count == 1 || size <= len { return [0..<len] }
        let span = size - len
        var out: [Range<UInt64>] = []
        for i in 0..<UInt64(count) {
            // span * i / (count - 1) without overflow for any 64-bit size.
            let (q, r) = span.quotientAndRemainder(dividingBy: UInt64(count - 1))
            let at = q * i + r * i / UInt64(count - 1)
            let range = at..<(at + len)
            if out.last != range { out.append(range) }
        }
        return out
    }

    public static func sampleDigest(of source: any BlockSource, count: Int, length: UInt64) throws -> String {
        var h = SHA256()
        var header = tag
        header.appendLE64(source.size)
        h.update(header)
        for r in samplePositions(size: source.size, count: count, length: length) {
            var bytes = [UInt8](repeating: 0, count: Int(r.count))
            try bytes.withUnsafeMutableBytes { try source.read(at: r.lowerBound, into: $0) }
            var head: [UInt8] = []
            head.appendLE64(r.lowerBound)
            head.appendLE64(UInt64(r.count))
            h.update(head)
            h.update(bytes)
        }
        return h.finalize().hex
    }

    public static func fullDigest(of source: any BlockSource) throws -> String {
        var h = SHA256()
        let chunk = 4 << 20
        var buf = [UInt8](repeating: 0, count: chunk)
        var at: UInt64 = 0
        while at < source.size {
            let n = Int(min(UInt64(chunk), source.size - at))
            try buf.withUnsafeMutableBytes { try source.read(at: at, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n])) }
            buf.withUnsafeBytes { h.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            at += UInt64(n)
        }
        return h.finalize().hex
    }

    /// The identity of `source` now.
    public static func measure(_ source: any BlockSource, full: Bool, id: String?) throws -> SourceIdentity {
        SourceIdentity(size: source.size,
                       sampleDigest: try sampleDigest(of: source, count: defaultSampleCount, length: defaultSampleLength),
                       sampleCount: defaultSampleCount, sampleLength: defaultSampleLength,
                       fullDigest: full ? try fullDigest(of: source) : nil, id: id)
    }

    /// Refuses a source that is not the recorded one: size first, then the samples, then the
    /// whole-source digest when one was recorded, then the user's ID when the opener gave one.
    public func check(_ source: any BlockSource, name: String, expectedID: String?) throws {
        guard source.size == size else {
            throw SourceError.changed(source: name, reason: "its size is \(source.size) bytes, it was \(size) when exposed")
        }
        guard sampleCount > 0, sampleCount <= Self.maxSampleCount, sampleLength > 0, sampleLength <= 1 << 20 else {
            throw SourceError.changed(source: name, reason: "the recorded sampling (\(sampleCount) × \(sampleLength) bytes) is out of bounds")
        }
        let found = try Self.sampleDigest(of: source, count: sampleCount, length: sampleLength)
        guard found == sampleDigest else {
            throw SourceError.changed(source: name, reason: "the digest of its \(sampleCount) sampled ranges differs from the one recorded")
        }
        if let fullDigest {
            guard try Self.fullDigest(of: source) == fullDigest else {
                throw SourceError.changed(source: name, reason: "the SHA-256 of its whole content differs from the one recorded (--verify-source)")
            }
        }
        if let expectedID, expectedID != (id ?? "") {
            throw SourceError.changed(source: name, reason: "its recorded ID is \(id.map { "'\($0)'" } ?? "absent"), the opener expects '\(expectedID)'")
        }
    }

    /// 32 bytes standing for the source in derived identities (GUID seed, reconfiguration layer base).
    public var digestBytes: [UInt8] {
        var b = Array("bootlab source identity v1".utf8)
        b.appendLE64(size)
        b += Array(sampleDigest.utf8)
        b += Array((fullDigest ?? "").utf8)
        b += Array((id ?? "").utf8)
        return SHA256.hash(b)
    }
}
