import BlockCore

/// Turns a plaintext block into its stored bytes and back (spec §4): compress (zstd or none),
/// then seal with AES-256-GCM when keys are given. Shared by image-local and vault blocks; only
/// the associated data and nonce context differ.
struct BlockCoder: Sendable {
    let keys: KeySet?
    let compression: BlockCodec
    let level: Int32

    static let tagSize = 16

    /// Largest stored length a valid block of `plainLength` bytes can have.
    static func maxStoredLength(plainLength: Int, codec: BlockCodec, encrypted: Bool) -> Int {
        let body = codec == .none ? plainLength : ZstdPool.compressBound(plainLength)
        return body + (encrypted ? tagSize : 0)
    }

    /// SHA-256 of the plaintext, or HMAC-SHA-256 under `digestKey` when encrypted (a bare hash
    /// would let anyone confirm a guessed block).
    func digest(_ plain: UnsafeRawBufferPointer, digestKey: [UInt8]?) -> [UInt8] {
        if let k = digestKey { return Crypto.hmac(k, plain) }
        return SHA256.hash(plain)
    }

    func encode(_ plain: UnsafeRawBufferPointer, aad: [UInt8], nonceContext: [UInt8]) throws -> (codec: BlockCodec, stored: [UInt8]) {
        var codec = BlockCodec.none
        var body: [UInt8]
        if compression == .zstd, let z = try ZstdPool.shared.compress(plain, level: level) {
            codec = .zstd
            body = z
        } else {
            body = Array(plain)
        }
        if let keys {
            body = try body.withUnsafeBytes { try keys.gcm.seal(nonce: keys.nonce(nonceContext), aad: aad + [codec.rawValue], plaintext: $0) }
        }
        return (codec, body)
    }

    /// Decodes `stored` into `out` (exactly the block's plaintext length). Returns a reason on
    /// failure; `checkDigest` also recomputes the digest (always for plain blocks, whose only
    /// integrity check it is; for encrypted blocks the GCM tag already authenticates them).
    /// `scratch`, when at least `stored.count` bytes, holds the decrypted-but-compressed bytes
    /// instead of a fresh allocation (restore decodes thousands of blocks per thread).
    func decode(_ stored: UnsafeRawBufferPointer, codec: BlockCodec, aad: [UInt8], nonceContext: [UInt8],
                expectedDigest: [UInt8], digestKey: [UInt8]?, checkDigest: Bool,
                into out: UnsafeMutableRawBufferPointer, scratch: UnsafeMutableRawBufferPointer? = nil) throws -> String? {
        func decompress(_ src: UnsafeRawBufferPointer) -> String? {
            switch codec {
            case .none:
                guard src.count == out.count else { return "stored \(src.count) bytes for a \(out.count)-byte block" }
                if src.baseAddress != UnsafeRawPointer(out.baseAddress) { out.copyMemory(from: src) }
                return nil
            case .zstd:
                return ZstdPool.shared.decompress(src, into: out)
            }
        }
        if let keys {
            guard stored.count >= BlockCoder.tagSize else { return "stored length \(stored.count) shorter than the GCM tag" }
            let openedCount = stored.count - BlockCoder.tagSize
            let nonce = keys.nonce(nonceContext), fullAAD = aad + [codec.rawValue]
            if codec == .none && openedCount == out.count {
                // Uncompressed: the ciphertext opens straight into the caller's buffer.
                guard try keys.gcm.open(nonce: nonce, aad: fullAAD, sealed: stored, into: out) else {
                    return "AES-GCM authentication failed (data altered or wrong key)"
                }
            } else if let scratch, scratch.count >= openedCount {
                let opened = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<openedCount])
                guard try keys.gcm.open(nonce: nonce, aad: fullAAD, sealed: stored, into: opened) else {
                    return "AES-GCM authentication failed (data altered or wrong key)"
                }
                if let e = decompress(UnsafeRawBufferPointer(opened)) { return e }
            } else {
                var opened = [UInt8](repeating: 0, count: openedCount)
                let ok = try opened.withUnsafeMutableBytes { try keys.gcm.open(nonce: nonce, aad: fullAAD, sealed: stored, into: $0) }
                guard ok else { return "AES-GCM authentication failed (data altered or wrong key)" }
                if let e = opened.withUnsafeBytes({ decompress($0) }) { return e }
            }
        } else if let e = decompress(stored) {
            return e
        }
        if checkDigest || keys == nil {
            let d = digest(UnsafeRawBufferPointer(out), digestKey: digestKey)
            guard d == expectedDigest else { return keys == nil ? "SHA-256 of the plaintext does not match the index" : "keyed digest of the plaintext does not match the index" }
        }
        return nil
    }
}

extension Array where Element == UInt8 {
    static func le64(_ v: UInt64) -> [UInt8] { var a: [UInt8] = []; a.appendLE64(v); return a }
    static func le32(_ v: UInt32) -> [UInt8] { var a: [UInt8] = []; a.appendLE32(v); return a }
}
