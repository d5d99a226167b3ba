import BlockCore
import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Options of `backup create` (spec §9 lists what each becomes in the file).
public struct BackupCreateOptions: Sendable {
    /// 64 KiB ... 4 MiB, a power of two. nil: the parent's, else 256 KiB.
    public var blockSize: UInt32? = nil
    public var compression: BlockCodec = .zstd
    public var compressionLevel: Int32 = 3
    public var encrypt = false
    public var passphrase: PassphraseSource? = nil
    public var scrypt: ScryptParameters = .default
    public var parentPath: String? = nil
    public var vaultDirectory: String? = nil
    /// Fixes the image ID; salts and IDs are then derived from it, so output is reproducible.
    /// nil: a random ID and salt from the OS RNG.
    public var imageID: GUID? = nil
    /// `--partition N`: back up only that partition of a disk image.
    public var partition: Int? = nil
    /// Force disk or volume (nil: detect).
    public var sourceKind: SourceKind? = nil
    public var label = ""
    /// Overrides the detected file-system hint.
    public var fileSystemHint: String? = nil
    /// Unix seconds; recorded only when given (no clock is read).
    public var creationTime: UInt64? = nil
    public var progress = false
    /// Worker threads for compression/encryption (default: active processors).
    public var threads: Int = 0

    public init() {}

    public static let defaultBlockSize: UInt32 = 256 << 10

    /// Derives the image ID from a seed string, for reproducible output.
    public static func imageID(seed: String) -> GUID { GUID.derived(seed: Array(seed.utf8), label: "bootlab backup image id") }
}

/// What a created backup holds.
public struct BackupCreateSummary: Sendable, Codable, Hashable {
    public var path: String
    public var imageID: String
    public var virtualSize: UInt64
    public var blockSize: UInt32
    public var blocks: Int
    public var zeroBlocks: Int
    public var localBlocks: Int
    public var vaultBlocks: Int
    public var newVaultBlocks: Int
    public var inheritedBlocks: Int
    public var fileSize: UInt64
}

/// Writes `.bli` images. The only code in BootLab that opens a backup file for writing; it
/// creates new files only (O_EXCL) and writes the header last, so a half-written file never
/// passes for an image (spec §2.3).
public enum BackupImageWriter {
    public static func create(sourcePath: String, outputPath: String, options: BackupCreateOptions) throws -> BackupCreateSummary {
        let raw = try RawFile(path: sourcePath)
        return try create(source: raw, outputPath: outputPath, options: options)
    }

    public static func create(source disk: any BlockSource, outputPath: String, options o: BackupCreateOptions) throws -> BackupCreateSummary {
        let desc = try SourceDescription.describe(disk, partition: o.partition, kind: o.sourceKind)
        let source = desc.source
        guard source.size > 0 else { throw BackupImageError.invalidArgument("the source is empty") }
        let pass = PassphraseOnce(o.passphrase)

        // Parent first: its geometry and KDF salt carry over.
        var parent: BackupImageReader?
        if let pp = o.parentPath {
            parent = try BackupImageReader.open(file: try RawFile(path: pp), path: pp, passphrase: pass,
                                                options: .init(), stats: BackupStats(), depth: 0)
        }
        let blockSize = o.blockSize ?? parent?.header.blockSize ?? BackupCreateOptions.defaultBlockSize
        guard blockSize >= BackupHeader.minBlockSize, blockSize <= BackupHeader.maxBlockSize, blockSize.nonzeroBitCount == 1 else {
            throw BackupImageError.invalidArgument("block size \(blockSize) must be a power of two from 64 KiB to 4 MiB")
        }
        let blocks = (source.size + UInt64(blockSize) - 1) / UInt64(blockSize)
        guard blocks <= UInt64(UInt32.max) else { throw BackupImageError.invalidArgument("source too large for this block size") }
        if let p = parent {
            guard p.header.virtualSize == source.size else {
                throw BackupImageError.parentSizeDiffers(parentSize: p.header.virtualSize, sourceSize: source.size)
            }
            guard p.header.blockSize == blockSize else { throw BackupImageError.parentBlockSizeDiffers(parentBlockSize: p.header.blockSize, requested: blockSize) }
            guard p.header.isEncrypted == o.encrypt else {
                throw BackupImageError.parentEncryptionDiffers(parentEncrypted: p.header.isEncrypted)
            }
        }

        var h = BackupHeader()
        let imageID: GUID
        if let id = o.imageID { imageID = id } else {
            var b = try Crypto.random(16)
            b[7] = (b[7] & 0x0F) | 0x40
            b[8] = (b[8] & 0x3F) | 0x80
            imageID = GUID(bytes: b)
        }
        h.imageID = imageID
        h.virtualSize = source.size
        h.blockSize = blockSize
        h.blockCount = UInt32(blocks)
        h.compression = o.compression
        h.compressionLevel = Int8(clamping: o.compressionLevel)
        h.sourceKind = desc.kind
        h.partitionScheme = desc.scheme
        h.partitionNumber = desc.partitionNumber
        h.logicalSectorSize = desc.sectorSize
        h.mbrDiskSignature = desc.diskSignature
        h.gptDiskGUID = desc.diskGUID
        h.gptPartitionType = desc.gptType
        h.gptPartitionGUID = desc.gptPartition
        h.gptAttributes = desc.gptAttributes
        h.gptPartitionName = desc.gptName
        h.gptEntryCount = desc.gptEntryCount
        h.gptEntrySize = desc.gptEntrySize
        h.mbrPartitionType = desc.mbrType
        h.bootable = desc.bootable
        h.partitionStartLBA = desc.startLBA
        h.partitionSizeBytes = desc.partitionBytes
        h.originalDiskSize = desc.diskBytes
        h.fileSystemHint = String(decoding: Array((o.fileSystemHint ?? desc.fsHint).utf8.prefix(BackupHeader.fsHintCapacity)), as: UTF8.self)
        h.label = o.label
        guard o.label.utf8.count <= BackupHeader.labelCapacity else { throw BackupImageError.invalidArgument("label is longer than \(BackupHeader.labelCapacity) bytes") }
        if let t = o.creationTime { h.flags.insert(.hasCreationTime); h.creationTime = t }

        var keys: KeySet?
        if o.encrypt {
            h.flags.insert(.encrypted)
            // Spec §6.1: an incremental reuses its parent's salt and cost (one scrypt per chain);
            // per-image HKDF subkeys keep nonces apart.
            let params = parent?.header.scrypt ?? o.scrypt
            guard params.isWithinBounds else { throw BackupImageError.invalidArgument("scrypt parameters out of bounds") }
            let salt: [UInt8]
            if let ps = parent?.header.kdfSalt { salt = ps } else if o.imageID != nil {
                salt = SHA256.hash(Array("bootlab kdf salt".utf8) + imageID.bytes)
            } else {
                salt = try Crypto.random(32)
            }
            h.scrypt = params
            h.kdfSalt = salt
            let master = try pass.master(salt: salt, params: params, for: outputPath)
            let k = KeySet(master: master, id: imageID, domain: "image")
            h.keyCheck = k.check
            keys = k
        }
        if let p = parent {
            h.flags.insert(.hasParent)
            h.parentID = p.header.imageID
            h.parentHeaderDigest = p.headerDigest
            h.parentPath = relativePath(of: o.parentPath!, from: outputPath)
        }

        var openedVault: BackupVault?
        if let vd = o.vaultDirectory {
            let v: BackupVault
            if BackupVault.exists(vd) {
                v = try BackupVault.open(directory: vd, passphrase: pass, stats: BackupStats())
            } else {
                let vid = try o.imageID.map { GUID.derived(seed: $0.bytes, label: "bootlab vault id") } ?? GUID(bytes: Crypto.random(16))
                let salt = try o.imageID.map { SHA256.hash(Array("bootlab vault salt".utf8) + $0.bytes) } ?? Crypto.random(32)
                v = try BackupVault.create(directory: vd, id: vid, salt: salt, scrypt: o.encrypt ? o.scrypt : nil, passphrase: pass)
            }
            guard v.isEncrypted == o.encrypt else {
                throw BackupImageError.vault("\(vd) is \(v.isEncrypted ? "" : "un")encrypted; the backup must match")
            }
            h.flags.insert(.usesVault)
            h.vaultID = v.id
            h.vaultPath = relativePath(of: vd, from: outputPath)
            openedVault = v
        }
        let vault = openedVault
        guard h.parentPath.utf8.count <= BackupHeader.pathCapacity, h.vaultPath.utf8.count <= BackupHeader.pathCapacity else {
            throw BackupImageError.invalidArgument("parent or vault path longer than \(BackupHeader.pathCapacity) bytes")
        }

        // O_EXCL: never overwrite anything, least of all the source or the parent.
        let fd = open(outputPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            if errno == EEXIST { throw BackupImageError.outputExists(outputPath) }
            throw IOError("create", path: outputPath, errno: errno)
        }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(outputPath) }
        }
        func pwriteAll(_ bytes: [UInt8], at off: UInt64) throws {
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, bytes.count - done, off_t(off) + off_t(done)) }
                if n < 0 { if errno == EINTR { continue }; throw IOError("write", path: outputPath, errno: errno) }
                done += n
            }
        }

        let coder = BlockCoder(keys: keys, compression: o.compression, level: o.compressionLevel)
        let vaultCoder = vault.map { BlockCoder(keys: $0.keys, compression: o.compression, level: o.compressionLevel) }
        let threads = o.threads > 0 ? o.threads : max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let batch = max(4, threads * 4)
        let bar = ProgressBar(total: source.size, label: "backup", enabled: o.progress)
        var entries: [IndexEntry] = []
        entries.reserveCapacity(Int(blocks))
        var pos = UInt64(BackupHeader.size)
        var summary = BackupCreateSummary(path: outputPath, imageID: imageID.description, virtualSize: source.size, blockSize: blockSize,
                                          blocks: Int(blocks), zeroBlocks: 0, localBlocks: 0, vaultBlocks: 0, newVaultBlocks: 0,
                                          inheritedBlocks: 0, fileSize: 0)
        let imageIDBytes = imageID.bytes
        let parentRef = parent
        var first = 0
        while first < Int(blocks) {
            let count = min(batch, Int(blocks) - first)
            let results = Slots<Result<Encoded, Error>>(count)
            let base = first
            DispatchQueue.concurrentPerform(iterations: count) { k in
                results[k] = Result {
                    try encodeBlock(base + k, source: source, blockSize: Int(blockSize), parent: parentRef, coder: coder,
                                    vault: vault, vaultCoder: vaultCoder, imageID: imageIDBytes)
                }
            }
            for k in 0..<count {
                let r = try results[k]!.get()
                var e = r.entry
                switch e.kind {
                case .absent: summary.inheritedBlocks += 1
                case .zero: summary.zeroBlocks += 1
                case .vault: summary.vaultBlocks += 1; if r.newInVault { summary.newVaultBlocks += 1 }
                case .local:
                    e.offset = pos
                    try pwriteAll(r.stored, at: pos)
                    pos += UInt64(r.stored.count)
                    summary.localBlocks += 1
                }
                entries.append(e)
                bar.advance(by: UInt64(min(Int(blockSize), Int(source.size - UInt64(base + k) * UInt64(blockSize)))))
            }
            first += count
        }
        var index: [UInt8] = []
        index.reserveCapacity(entries.count * IndexEntry.size)
        for e in entries { e.encode(into: &index) }
        h.indexOffset = pos
        h.indexLength = UInt64(index.count)
        h.indexDigest = SHA256.hash(index)
        try pwriteAll(index, at: pos)
        pos += UInt64(index.count)
        let headerBytes = h.encode()
        let trailer = BackupTrailer(imageID: imageID, indexOffset: h.indexOffset, indexLength: h.indexLength, headerDigest: SHA256.hash(headerBytes))
        try pwriteAll(trailer.encode(), at: pos)
        pos += UInt64(BackupTrailer.size)
        guard fsync(fd) == 0 else { throw IOError("fsync", path: outputPath, errno: errno) }
        try pwriteAll(headerBytes, at: 0)
        guard fsync(fd) == 0 else { throw IOError("fsync", path: outputPath, errno: errno) }
        bar.finish()
        if let vault {
            let referenced = entries.enumerated().filter { $0.element.kind == .vault }
            let bytes = referenced.reduce(UInt64(0)) { acc, p in acc + UInt64(min(UInt64(blockSize), source.size - UInt64(p.offset) * UInt64(blockSize))) }
            try vault.recordImage(imageID, logicalBytes: bytes, blocks: referenced.count)
        }
        summary.fileSize = pos
        ok = true
        return summary
    }

    struct Encoded: Sendable {
        var entry: IndexEntry
        var stored: [UInt8]
        var newInVault: Bool
    }

    static func encodeBlock(_ i: Int, source: any BlockSource, blockSize: Int, parent: BackupImageReader?, coder: BlockCoder,
                            vault: BackupVault?, vaultCoder: BlockCoder?, imageID: [UInt8]) throws -> Encoded {
        let off = UInt64(i) * UInt64(blockSize)
        let plain = Int(min(UInt64(blockSize), source.size - off))
        let ext = try source.extents(in: off..<off + UInt64(plain))
        var data: [UInt8] = []
        var isZero = ext.allSatisfy { $0.kind.readsAsZero }
        if !isZero {
            data = try source.read(at: off, count: plain)
            isZero = data.withUnsafeBytes { allZero($0) }
        }
        if let parent {
            // Spec §9.2: an incremental stores only what differs from its parent chain.
            let pk = parent.locate(i)?.kind
            if isZero && (pk == nil || pk == .zero) { return Encoded(entry: IndexEntry(kind: .absent), stored: [], newInVault: false) }
            if !isZero, pk == .local || pk == .vault, let pb = try parent.block(i), pb == data {
                return Encoded(entry: IndexEntry(kind: .absent), stored: [], newInVault: false)
            }
        }
        if isZero { return Encoded(entry: IndexEntry(kind: .zero), stored: [], newInVault: false) }
        return try data.withUnsafeBytes { p in
            if let vault, let vaultCoder {
                let address = vaultCoder.digest(p, digestKey: vault.digestKey)
                var isNew = false
                if !vault.has(address) {
                    let (codec, stored) = try vaultCoder.encode(p, aad: vault.aad(address, plainLength: plain), nonceContext: vault.nonceContext(address))
                    isNew = try vault.put(address: address, codec: codec, plainLength: plain, stored: stored)
                }
                return Encoded(entry: IndexEntry(kind: .vault, digest: address), stored: [], newInVault: isNew)
            }
            let digest = coder.digest(p, digestKey: coder.keys?.digestKey)
            let aad = imageID + [UInt8].le64(UInt64(i)) + [UInt8].le32(UInt32(plain))
            let (codec, stored) = try coder.encode(p, aad: aad, nonceContext: Array("L".utf8) + [UInt8].le64(UInt64(i)) + digest)
            return Encoded(entry: IndexEntry(kind: .local, codec: codec, storedLength: UInt32(stored.count), digest: digest,
                                             payloadCRC: CRC32C.checksum(stored)), stored: stored, newInVault: false)
        }
    }

    static func allZero(_ p: UnsafeRawBufferPointer) -> Bool {
        var i = 0
        let n = p.count
        while i + 8 <= n {
            if p.loadUnaligned(fromByteOffset: i, as: UInt64.self) != 0 { return false }
            i += 8
        }
        while i < n { if p[i] != 0 { return false }; i += 1 }
        return true
    }

    /// `target` as seen from the directory of `file` (both as given, made absolute against the
    /// working directory), so a chain or vault can move together with its images.
    static func relativePath(of target: String, from file: String) -> String {
        func absolute(_ p: String) -> [Substring] {
            var full = p
            if !p.hasPrefix("/") {
                var buf = [CChar](repeating: 0, count: 4096)
                if getcwd(&buf, buf.count) != nil {
                    full = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) + "/" + p
                }
            }
            var parts: [Substring] = []
            for c in full.split(separator: "/") {
                if c == "." { continue }
                if c == "..", !parts.isEmpty { parts.removeLast(); continue }
                parts.append(c)
            }
            return parts
        }
        let t = absolute(target)
        let f = Array(absolute(file).dropLast())
        var common = 0
        while common < min(t.count, f.count), t[common] == f[common] { common += 1 }
        let ups = Array(repeating: "..", count: f.count - common)
        let rest = t[common...].map(String.init)
        let rel = (ups + rest).joined(separator: "/")
        return rel.isEmpty ? "." : rel
    }
}

/// Fixed-size result slots written by concurrent workers, each to its own index.
final class Slots<T>: @unchecked Sendable {
    // @unchecked: workers write disjoint indices; the owner reads after concurrentPerform returns.
    // A raw buffer, not an array: concurrent writes to one array property would trip Swift's
    // dynamic exclusivity checks even at distinct indices.
    private let items: UnsafeMutableBufferPointer<T?>
    init(_ n: Int) {
        items = .allocate(capacity: n)
        items.initialize(repeating: nil)
    }
    deinit {
        items.baseAddress!.deinitialize(count: items.count)
        items.deallocate()
    }
    subscript(i: Int) -> T? {
        get { items[i] }
        set { items[i] = newValue }
    }
}
