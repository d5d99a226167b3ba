import BlockCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A deduplicating block vault (spec §7): a directory of content-addressed blocks shared by every
/// backup written to it. Addresses are SHA-256 of the plaintext, or HMAC-SHA-256 under the vault's
/// address key when encrypted, so an encrypted vault's file names reveal nothing about content.
public final class BackupVault: @unchecked Sendable {
    // @unchecked: immutable after open; file operations are independent per block.
    public let directory: String
    public let id: GUID
    public let isEncrypted: Bool
    public let scrypt: ScryptParameters?
    let salt: [UInt8]
    let keys: KeySet?
    let stats: BackupStats

    static let headerName = "vault.hdr"
    static let headerSize = 512
    static let headerMagic: [UInt8] = Array("BLIVAULT".utf8)
    static let blockMagic: [UInt8] = Array("BLIVBLK1".utf8)
    static let blockHeaderSize = 32

    private init(directory: String, id: GUID, isEncrypted: Bool, scrypt: ScryptParameters?, salt: [UInt8], keys: KeySet?, stats: BackupStats) {
        self.directory = directory
        self.id = id
        self.isEncrypted = isEncrypted
        self.scrypt = scrypt
        self.salt = salt
        self.keys = keys
        self.stats = stats
    }

    var digestKey: [UInt8]? { keys?.digestKey }

    static func exists(_ dir: String) -> Bool { access(dir + "/" + headerName, F_OK) == 0 }

    /// Opens an existing vault; the passphrase is asked only when the vault is encrypted.
    /// `statisticsOnly` skips the key derivation of an encrypted vault (stats read no block).
    public static func open(directory: String, passphrase: PassphraseSource?, statisticsOnly: Bool = false,
                            stats: BackupStats = BackupStats()) throws -> BackupVault {
        try open(directory: directory, passphrase: PassphraseOnce(passphrase), stats: stats, keyless: statisticsOnly)
    }

    static func open(directory: String, passphrase: PassphraseOnce, stats: BackupStats, keyless: Bool = false) throws -> BackupVault {
        let path = directory + "/" + headerName
        guard exists(directory) else { throw BackupImageError.vault("\(directory) is not a vault (no \(headerName))") }
        let f = try RawFile(path: path)
        let h = try f.read(at: 0, count: Int(min(f.size, UInt64(headerSize))))
        let v = ByteView(h, base: 0, format: "vault", structure: "\(path) header")
        guard h.count == headerSize else { throw v.error(at: h.count, "truncated: \(h.count) of \(headerSize) bytes") }
        guard Array(h[0..<8]) == headerMagic else { throw v.error(at: 0, "bad magic") }
        guard h.le16(8) == 1 else { throw v.error(at: 8, "unsupported version \(h.le16(8))") }
        guard CRC32C.checksum(h, zeroingFieldAt: 12) == h.le32(12) else { throw v.error(at: 12, "CRC-32C mismatch") }
        let flags = h.le32(16)
        guard flags & ~1 == 0 else { throw v.error(at: 16, "unknown flags") }
        let id = GUID(bytes: Array(h[20..<36]))
        let encrypted = flags & 1 != 0
        let salt = Array(h[48..<80])
        var params: ScryptParameters?
        var keys: KeySet?
        if encrypted {
            guard h[36] == 1 else { throw v.error(at: 36, "encrypted vault without scrypt") }
            let p = ScryptParameters(log2N: h[37], r: h.le32(40), p: h.le32(44))
            guard p.isWithinBounds else { throw v.error(at: 37, "scrypt parameters exceed the reader's bounds") }
            params = p
            if keyless { return BackupVault(directory: directory, id: id, isEncrypted: true, scrypt: p, salt: salt, keys: nil, stats: stats) }
            let master = try passphrase.master(salt: salt, params: p, for: "vault \(directory)")
            let k = KeySet(master: master, id: id, domain: "vault")
            guard Crypto.equal(k.check, Array(h[80..<112])) else { throw BackupImageError.wrongPassphrase("vault \(directory)") }
            keys = k
        }
        return BackupVault(directory: directory, id: id, isEncrypted: encrypted, scrypt: params, salt: salt, keys: keys, stats: stats)
    }

    /// Creates a vault in `directory` (made if missing; must not already be a vault).
    static func create(directory: String, id: GUID, salt: [UInt8], scrypt: ScryptParameters?, passphrase: PassphraseOnce) throws -> BackupVault {
        if access(directory, F_OK) != 0 {
            guard mkdir(directory, 0o755) == 0 else { throw IOError("mkdir", path: directory, errno: errno) }
        }
        for sub in ["blocks", "images"] {
            let p = directory + "/" + sub
            if access(p, F_OK) != 0, mkdir(p, 0o755) != 0 { throw IOError("mkdir", path: p, errno: errno) }
        }
        var h = [UInt8](repeating: 0, count: headerSize)
        h.put(headerMagic, at: 0)
        h.putLE16(1, at: 8)
        h.putLE32(scrypt == nil ? 0 : 1, at: 16)
        h.put(id.bytes, at: 20)
        if let s = scrypt {
            h[36] = 1
            h[37] = s.log2N
            h.putLE32(s.r, at: 40)
            h.putLE32(s.p, at: 44)
            h.put(salt, at: 48)
            let master = try passphrase.master(salt: salt, params: s, for: "vault \(directory)")
            h.put(KeySet(master: master, id: id, domain: "vault").check, at: 80)
        }
        h.putLE32(CRC32C.checksum(h, zeroingFieldAt: 12), at: 12)
        try writeNew(directory + "/" + headerName, h)
        return try open(directory: directory, passphrase: passphrase, stats: BackupStats())
    }

    func blockPath(_ address: [UInt8]) -> String {
        let hex = address.hex
        return "\(directory)/blocks/\(hex.prefix(2))/\(hex)"
    }

    func has(_ address: [UInt8]) -> Bool { access(blockPath(address), F_OK) == 0 }

    func aad(_ address: [UInt8], plainLength: Int) -> [UInt8] { id.bytes + address + [UInt8].le32(UInt32(plainLength)) }
    func nonceContext(_ address: [UInt8]) -> [UInt8] { Array("V".utf8) + address }

    /// Stores a block under `address` unless present. Written to a temporary name and renamed,
    /// so a reader never sees a partial block and concurrent writers of the same content agree.
    func put(address: [UInt8], codec: BlockCodec, plainLength: Int, stored: [UInt8]) throws -> Bool {
        let path = blockPath(address)
        if access(path, F_OK) == 0 { return false }
        let dir = String(path[..<path.lastIndex(of: "/")!])
        if access(dir, F_OK) != 0, mkdir(dir, 0o755) != 0, errno != EEXIST { throw IOError("mkdir", path: dir, errno: errno) }
        var h = [UInt8](repeating: 0, count: BackupVault.blockHeaderSize)
        h.put(BackupVault.blockMagic, at: 0)
        h[8] = codec.rawValue
        h[9] = isEncrypted ? 1 : 0
        h.putLE32(UInt32(plainLength), at: 12)
        h.putLE32(UInt32(stored.count), at: 16)
        h.putLE32(CRC32C.checksum(stored), at: 20)
        h.putLE32(CRC32C.checksum(h, zeroingFieldAt: 28), at: 28)
        let tmp = "\(path).tmp.\(getpid()).\(UInt(bitPattern: address.hashValue))"
        try BackupVault.writeNew(tmp, h + stored)
        guard rename(tmp, path) == 0 else { let e = errno; unlink(tmp); throw IOError("rename", path: path, errno: e) }
        return true
    }

    /// A stored vault block, bounds-checked against its file and the maximum for `plainLength`.
    func get(address: [UInt8], plainLength: Int) throws -> (codec: BlockCodec, stored: [UInt8]) {
        let path = blockPath(address)
        let f: RawFile
        do { f = try RawFile(path: path) } catch {
            throw FormatError("vault", "block \(address.hex)", at: 0, "missing from \(directory) (\(error))")
        }
        let hs = BackupVault.blockHeaderSize
        guard f.size >= UInt64(hs) else { throw FormatError("vault", path, at: 0, "truncated block file") }
        let h = try f.read(at: 0, count: hs)
        stats.addBytesRead(hs)
        guard Array(h[0..<8]) == BackupVault.blockMagic else { throw FormatError("vault", path, at: 0, "bad block magic") }
        guard CRC32C.checksum(h, zeroingFieldAt: 28) == h.le32(28) else { throw FormatError("vault", path, at: 28, "block header CRC-32C mismatch") }
        guard let codec = BlockCodec(rawValue: h[8]) else { throw FormatError("vault", path, at: 8, "unknown codec \(h[8])") }
        guard (h[9] == 1) == isEncrypted else { throw FormatError("vault", path, at: 9, "encryption flag disagrees with the vault") }
        guard Int(h.le32(12)) == plainLength else { throw FormatError("vault", path, at: 12, "plaintext length \(h.le32(12)), expected \(plainLength)") }
        let n = Int(h.le32(16))
        guard n <= BlockCoder.maxStoredLength(plainLength: plainLength, codec: codec, encrypted: isEncrypted),
              UInt64(hs + n) == f.size else {
            throw FormatError("vault", path, at: 16, "stored length \(n) does not fit the block file (\(f.size) bytes)")
        }
        let stored = try f.read(at: UInt64(hs), count: n)
        stats.addBytesRead(n)
        guard CRC32C.checksum(stored) == h.le32(20) else { throw FormatError("vault", path, at: UInt64(hs), "stored bytes CRC-32C mismatch") }
        return (codec, stored)
    }

    /// Records which image references how much (what `vault stats` sums into the dedup ratio).
    func recordImage(_ id: GUID, logicalBytes: UInt64, blocks: Int) throws {
        let text = "image \(id) blocks \(blocks) bytes \(logicalBytes)\n"
        let path = "\(directory)/images/\(id)"
        unlink(path)
        try BackupVault.writeNew(path, Array(text.utf8))
    }

    static func writeNew(_ path: String, _ bytes: [UInt8]) throws {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw IOError("create", path: path, errno: errno) }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 { if errno == EINTR { continue }; throw IOError("write", path: path, errno: errno) }
            done += n
        }
    }

    static func listDirectory(_ path: String) -> [String] {
        guard let d = opendir(path) else { return [] }
        defer { closedir(d) }
        var out: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { out.append(name) }
        }
        return out.sorted()
    }
}

/// What `bootlab backup vault stats` reports.
public struct VaultStatistics: Sendable, Codable, Hashable {
    public var vaultID: String
    public var encrypted: Bool
    public var images: Int
    public var storedBlocks: Int
    /// Bytes of block files on disk (headers included).
    public var storedBytes: UInt64
    public var referencedBlocks: Int
    /// Plaintext bytes the images reference through the vault.
    public var referencedBytes: UInt64
    /// referencedBytes / storedBytes (compression and dedup together).
    public var dedupRatio: Double
}

/// A problem found by a verification pass: what, where, and why.
public struct BackupFinding: Sendable, Codable, Hashable, CustomStringConvertible {
    public enum Severity: String, Sendable, Codable { case corrupt, couldNotCheck }
    public var severity: Severity
    /// Block index, when the finding is about one block.
    public var block: Int?
    /// Virtual offset of the block, when known.
    public var virtualOffset: UInt64?
    /// Offset in the file holding the damage, when known.
    public var fileOffset: UInt64?
    public var message: String

    public var description: String { message }
}

extension BackupVault {
    public func statistics() throws -> VaultStatistics {
        var stored = 0
        var bytes: UInt64 = 0
        for sub in BackupVault.listDirectory(directory + "/blocks") {
            for f in BackupVault.listDirectory("\(directory)/blocks/\(sub)") where !f.contains(".tmp.") {
                var st = stat()
                if stat("\(directory)/blocks/\(sub)/\(f)", &st) == 0 { stored += 1; bytes += UInt64(st.st_size) }
            }
        }
        var images = 0, refBlocks = 0
        var refBytes: UInt64 = 0
        for name in BackupVault.listDirectory(directory + "/images") {
            guard let f = try? RawFile(path: "\(directory)/images/\(name)"), f.size < 4096,
                  let b = try? f.read(at: 0, count: Int(f.size)) else { continue }
            let words = String(decoding: b, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" })
            guard words.count >= 6, let n = Int(words[3]), let by = UInt64(words[5]) else { continue }
            images += 1
            refBlocks += n
            refBytes += by
        }
        return VaultStatistics(vaultID: id.description, encrypted: isEncrypted, images: images, storedBlocks: stored,
                               storedBytes: bytes, referencedBlocks: refBlocks, referencedBytes: refBytes,
                               dedupRatio: bytes == 0 ? 0 : Double(refBytes) / Double(bytes))
    }

    /// Decodes every block file and checks its address (spec §7.3). Findings name the file.
    public func verify() throws -> [BackupFinding] {
        var findings: [BackupFinding] = []
        let coder = BlockCoder(keys: keys, compression: .none, level: 0)
        for sub in BackupVault.listDirectory(directory + "/blocks") {
            for name in BackupVault.listDirectory("\(directory)/blocks/\(sub)") where !name.contains(".tmp.") {
                let path = "\(directory)/blocks/\(sub)/\(name)"
                guard let address = [UInt8](hex: name), address.count == 32 else {
                    findings.append(BackupFinding(severity: .corrupt, message: "\(path): name is not a 64-hex-digit address"))
                    continue
                }
                do {
                    let f = try RawFile(path: path)
                    guard f.size >= UInt64(BackupVault.blockHeaderSize) else { throw FormatError("vault", path, at: 0, "truncated block file") }
                    let h = try f.read(at: 0, count: BackupVault.blockHeaderSize)
                    let plain = Int(h.le32(12))
                    guard plain > 0, plain <= Int(BackupHeader.maxBlockSize) else { throw FormatError("vault", path, at: 12, "plaintext length \(plain) out of range") }
                    let (codec, stored) = try get(address: address, plainLength: plain)
                    var out = [UInt8](repeating: 0, count: plain)
                    let failure = try stored.withUnsafeBytes { s in
                        try out.withUnsafeMutableBytes { o in
                            try coder.decode(s, codec: codec, aad: aad(address, plainLength: plain), nonceContext: nonceContext(address),
                                             expectedDigest: address, digestKey: digestKey, checkDigest: true, into: o)
                        }
                    }
                    if let failure { findings.append(BackupFinding(severity: .corrupt, fileOffset: UInt64(BackupVault.blockHeaderSize), message: "\(path): \(failure)")) }
                } catch {
                    findings.append(BackupFinding(severity: .corrupt, message: "\(error)"))
                }
            }
        }
        return findings
    }
}
