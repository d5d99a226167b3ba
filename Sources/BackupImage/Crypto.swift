import BlockCore
import CCryptoShim

/// Errors of the backup layer that are not structural parse errors.
public enum BackupImageError: Error, CustomStringConvertible, Equatable, Sendable {
    case passphraseRequired(String)
    case wrongPassphrase(String)
    /// The chain from `image` is deeper than `limit` images (a loop, or a damaged chain).
    case chainTooDeep(image: String, limit: Int)
    /// The parent the header names cannot be opened (`reason`: the I/O error).
    case parentMissing(parent: String, child: String, reason: String)
    /// The parent opens but is structurally damaged.
    case parentDamaged(parent: String, child: String, error: FormatError)
    /// The file at the parent's path is another image than the one the child was made from.
    case parentIdentity(parent: String, child: String, found: GUID, recorded: GUID)
    /// The parent's header digest is not the one the child recorded: the parent changed.
    case parentAltered(parent: String, child: String)
    /// The parent's virtual size or block size differs from the child's.
    case parentGeometry(parent: String, child: String, parentSize: UInt64, parentBlockSize: UInt32,
                        childSize: UInt64, childBlockSize: UInt32)
    /// Writing an incremental: the parent does not fit the source or the options.
    case parentSizeDiffers(parentSize: UInt64, sourceSize: UInt64)
    case parentBlockSizeDiffers(parentBlockSize: UInt32, requested: UInt32)
    case parentEncryptionDiffers(parentEncrypted: Bool)
    case vault(String)
    case crypto(String)
    case invalidArgument(String)
    case outputExists(String)

    /// Whether the error proves the chain corrupt (as opposed to incomplete or unreadable here).
    public var isCorruption: Bool {
        switch self {
        case .parentDamaged, .parentIdentity, .parentAltered: return true
        default: return false
        }
    }

    public var description: String {
        switch self {
        case let .passphraseRequired(s): return "\(s) is encrypted: a passphrase is needed (--passphrase-file, BOOTLAB_PASSPHRASE or a terminal)"
        case let .wrongPassphrase(s): return "wrong passphrase for \(s) (key check failed)"
        case let .chainTooDeep(image, limit): return "parent: chain of \(image) is deeper than \(limit) images"
        case let .parentMissing(parent, child, reason): return "parent: parent \(parent) of \(child) is missing (\(reason))"
        case let .parentDamaged(parent, child, error): return "parent: parent \(parent) of \(child) is damaged: \(error)"
        case let .parentIdentity(parent, child, found, recorded):
            return "parent: \(parent) is image \(found), but \(child) was made from \(recorded)"
        case let .parentAltered(parent, child):
            return "parent: \(parent) was altered since \(child) was made from it (header digest differs)"
        case let .parentGeometry(parent, child, ps, pb, cs, cb):
            return "parent: \(parent) has a different size or block size than \(child) (\(ps) bytes in \(pb)-byte blocks, the child \(cs) in \(cb))"
        case let .parentSizeDiffers(p, s): return "parent: parent holds \(p) bytes, the source \(s)"
        case let .parentBlockSizeDiffers(p, r): return "parent: parent block size is \(p), not \(r)"
        case let .parentEncryptionDiffers(enc): return "parent: an incremental must be \(enc ? "" : "un")encrypted like its parent"
        case let .vault(s): return "vault: \(s)"
        case let .crypto(s): return "crypto: \(s)"
        case let .invalidArgument(s): return s
        case let .outputExists(s): return "\(s) already exists; a backup is never overwritten"
        }
    }
}

/// Thin wrappers over the Crypto++ shim; no cryptography is implemented here.
enum Crypto {
    static func lastError() -> String { String(cString: bl_last_error()) }

    static func scrypt(_ passphrase: [UInt8], salt: [UInt8], _ p: ScryptParameters) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        let rc = out.withUnsafeMutableBufferPointer { o in
            bl_scrypt(passphrase, passphrase.count, salt, salt.count, UInt64(1) << UInt64(p.log2N), p.r, p.p, o.baseAddress, 32)
        }
        guard rc == 0 else { throw BackupImageError.crypto(lastError()) }
        return out
    }

    static func hkdf(_ ikm: [UInt8], salt: [UInt8], info: String, count: Int = 32) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let infoBytes = Array(info.utf8)
        let rc = out.withUnsafeMutableBufferPointer { o in
            bl_hkdf_sha256(ikm, ikm.count, salt, salt.count, infoBytes, infoBytes.count, o.baseAddress, count)
        }
        precondition(rc == 0, "HKDF-SHA-256 of a 32-byte key cannot fail: \(lastError())")
        return out
    }

    static func hmac(_ key: [UInt8], _ data: UnsafeRawBufferPointer) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        let rc = out.withUnsafeMutableBufferPointer { o in
            bl_hmac_sha256(key, key.count, data.baseAddress, data.count, o.baseAddress)
        }
        precondition(rc == 0, "HMAC-SHA-256 cannot fail: \(lastError())")
        return out
    }

    static func hmac(_ key: [UInt8], _ data: [UInt8]) -> [UInt8] { data.withUnsafeBytes { hmac(key, $0) } }

    static func random(_ count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let rc = out.withUnsafeMutableBufferPointer { bl_random_bytes($0.baseAddress, count) }
        guard rc == 0 else { throw BackupImageError.crypto(lastError()) }
        return out
    }

    /// Constant-time comparison for key checks.
    static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var d: UInt8 = 0
        for i in 0..<a.count { d |= a[i] ^ b[i] }
        return d == 0
    }
}

/// AES-256-GCM contexts for one key. Crypto++ contexts are not thread-safe, so each call borrows
/// one from a pool (created on demand, at most one per concurrent caller).
final class GCMPool: @unchecked Sendable {
    // @unchecked: `free` is only touched under `lock`; a borrowed context is used by one thread.
    private let key: [UInt8]
    private let lock = NSLockish()
    private var free: [OpaquePointer] = []

    init(key: [UInt8]) {
        precondition(key.count == 32, "AES-256 key is 32 bytes")
        self.key = key
    }

    deinit { for c in free { bl_gcm_free(c) } }

    private func borrow() -> OpaquePointer {
        if let c = lock.withLock({ free.popLast() }) { return c }
        return key.withUnsafeBufferPointer { bl_gcm_new($0.baseAddress!) }
    }

    private func giveBack(_ c: OpaquePointer) { lock.withLock { free.append(c) } }

    /// ciphertext ‖ 16-byte tag.
    func seal(nonce: [UInt8], aad: [UInt8], plaintext: UnsafeRawBufferPointer) throws -> [UInt8] {
        let c = borrow()
        defer { giveBack(c) }
        var out = [UInt8](repeating: 0, count: plaintext.count + 16)
        let rc = out.withUnsafeMutableBufferPointer { o in
            bl_gcm_encrypt(c, nonce, nonce.count, aad, aad.count, plaintext.baseAddress, plaintext.count,
                           o.baseAddress, o.baseAddress! + plaintext.count)
        }
        guard rc == 0 else { throw BackupImageError.crypto(Crypto.lastError()) }
        return out
    }

    /// Returns false when the tag does not verify.
    func open(nonce: [UInt8], aad: [UInt8], sealed: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) throws -> Bool {
        precondition(sealed.count >= 16 && out.count >= sealed.count - 16)
        let c = borrow()
        defer { giveBack(c) }
        let n = sealed.count - 16
        let rc = bl_gcm_decrypt(c, nonce, nonce.count, aad, aad.count, sealed.baseAddress, n,
                                sealed.baseAddress!.assumingMemoryBound(to: UInt8.self) + n,
                                out.baseAddress?.assumingMemoryBound(to: UInt8.self))
        if rc < 0 { throw BackupImageError.crypto(Crypto.lastError()) }
        return rc == 0
    }
}

/// The keys of one image or vault, derived from the scrypt master key by HKDF with the image (or
/// vault) ID as salt (spec §6): distinct IDs give distinct keys, so no (key, nonce) pair repeats
/// across the images of a chain or a vault even though they share a passphrase and KDF salt.
struct KeySet: Sendable {
    let gcm: GCMPool
    let nonceKey: [UInt8]
    let digestKey: [UInt8]
    let check: [UInt8]

    init(master: [UInt8], id: GUID, domain: String) {
        gcm = GCMPool(key: Crypto.hkdf(master, salt: id.bytes, info: "bootlab \(domain) v1 aes-256-gcm"))
        nonceKey = Crypto.hkdf(master, salt: id.bytes, info: "bootlab \(domain) v1 nonce")
        digestKey = Crypto.hkdf(master, salt: id.bytes, info: "bootlab \(domain) v1 digest")
        let checkKey = Crypto.hkdf(master, salt: id.bytes, info: "bootlab \(domain) v1 key check")
        check = Crypto.hmac(checkKey, Array("bootlab key check".utf8) + id.bytes)
    }

    /// 96-bit nonce bound to the position and content: equal nonces only ever encrypt equal
    /// plaintexts (spec §6.3), even if a user reuses an image ID.
    func nonce(_ context: [UInt8]) -> [UInt8] { Array(Crypto.hmac(nonceKey, context).prefix(12)) }
}
