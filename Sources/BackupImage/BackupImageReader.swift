import BlockCore
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A `.bli` backup image as a block source (spec §8): random access, thread-safe, a bounded LRU
/// cache of decoded blocks, read-ahead for sequential readers, every block verified on decode, and
/// incremental chains resolved through their parents.
public final class BackupImageReader: BlockSource, @unchecked Sendable {
    // @unchecked: all stored properties are immutable after open; mutable state lives in the
    // cache and the read-ahead tracker, each behind its own lock.
    public let path: String
    public let header: BackupHeader
    /// SHA-256 of the 4096 header bytes: what a plugin pointer stores to recognize this image.
    public let headerDigest: [UInt8]
    public let parent: BackupImageReader?
    public let vault: BackupVault?
    public let stats: BackupStats
    public var size: UInt64 { header.virtualSize }

    let file: any BlockSource
    let keys: KeySet?
    let coder: BlockCoder
    let depth: Int
    // The index, column-wise (a 64-byte struct with an array per block would cost far more).
    let kinds: [UInt8]
    let codecs: [UInt8]
    let storedLengths: [UInt32]
    let offsets: [UInt64]
    let payloadCRCs: [UInt32]
    let digests: [UInt8]
    private let cache: BlockCache
    private let readAhead: Int
    private let decodeThreads: Int
    /// The last request's block range and how many requests in a row continued the one before.
    private let streak = Locked<(last: Int, run: Int)>((last: -2, run: 0))
    /// Decode buffers handed to one thread at a time (request workers and read-ahead tasks).
    private let scratchPool = Locked<[BlockScratch]>([])
    /// Read-ahead blocks claimed and not yet decoded (bounds the work and memory in flight).
    private let readAheadInFlight = Locked(0)

    public struct Options: Sendable {
        /// Bytes of decoded blocks kept (default 64 MiB; at least 2 blocks).
        public var cacheBytes: Int = 64 << 20
        /// Blocks decoded ahead once a sequential pattern is seen (0 disables). The window grows to
        /// twice the request for large sequential requests, never beyond half the cache.
        public var readAheadBlocks: Int = 4
        /// Workers decoding the blocks one `read` spans (1: on the calling thread only).
        public var decodeThreads: Int = BackupImageReader.defaultDecodeThreads
        /// Vault directory overriding the path recorded in the header.
        public var vaultDirectory: String? = nil
        public init() {}
    }

    /// Bound on chain length (and cycle guard).
    public static let maxChainDepth = 64

    /// True when `firstBytes` start like a backup image (what `info`/`check`/`convert` dispatch on).
    public static func looksLikeBackupImage(firstBytes: [UInt8]) -> Bool { BackupHeader.hasMagic(firstBytes) }

    /// Reads and validates only the header: no index, no data block, no passphrase. This is what
    /// the exposure layer uses to answer metadata without opening the backup.
    public static func readHeader(path: String) throws -> (header: BackupHeader, digest: [UInt8]) {
        let f = try RawFile(path: path)
        let bytes = try f.read(at: 0, count: Int(min(f.size, UInt64(BackupHeader.size))))
        let h = try BackupHeader.parse(bytes)
        return (h, SHA256.hash(bytes))
    }

    /// Opens an image (and its parents and vault). The passphrase is resolved only if something
    /// in the chain is encrypted; a wrong one fails here, via the key check.
    public static func open(path: String, passphrase: PassphraseSource? = nil, vault: String? = nil,
                            options: Options = Options(), stats: BackupStats = BackupStats()) throws -> BackupImageReader {
        var o = options
        if let vault { o.vaultDirectory = vault }
        return try open(file: try RawFile(path: path), path: path, passphrase: PassphraseOnce(passphrase), options: o, stats: stats, depth: 0)
    }

    /// Opens an image held by any block source (`path` only names it and anchors relative parent
    /// and vault paths). Used by the fuzz harness and tests.
    public static func open(source: any BlockSource, path: String, passphrase: PassphraseSource? = nil,
                            options: Options = Options(), stats: BackupStats = BackupStats()) throws -> BackupImageReader {
        try open(file: source, path: path, passphrase: PassphraseOnce(passphrase), options: options, stats: stats, depth: 0)
    }

    static func open(file: any BlockSource, path: String, passphrase: PassphraseOnce, options: Options,
                     stats: BackupStats, depth: Int) throws -> BackupImageReader {
        stats.addOpen()
        let fileSize = file.size
        let hs = UInt64(BackupHeader.size), ts = UInt64(BackupTrailer.size)
        let headerBytes = try file.read(at: 0, count: Int(min(fileSize, hs)))
        stats.addBytesRead(headerBytes.count)
        let header = try BackupHeader.parse(headerBytes)
        let headerDigest = SHA256.hash(headerBytes)
        guard fileSize >= hs + ts else {
            throw FormatError("backup image", "trailer", at: fileSize, "file of \(fileSize) bytes is truncated (no room for a trailer)")
        }
        let trailer = try BackupTrailer.parse(try file.read(at: fileSize - ts, count: Int(ts)), at: fileSize - ts)
        stats.addBytesRead(Int(ts))
        guard trailer.imageID == header.imageID, trailer.indexOffset == header.indexOffset,
              trailer.indexLength == header.indexLength, trailer.headerDigest == Array(headerDigest.prefix(16)) else {
            throw FormatError("backup image", "trailer", at: fileSize - ts, "does not match the header (image ID, index location or header digest)")
        }
        // Spec §5: the index ends exactly where the trailer starts; anything else is truncation
        // or splicing. This also bounds the index allocation by the real file size.
        let (indexEnd, ovf) = header.indexOffset.addingReportingOverflow(header.indexLength)
        guard !ovf, indexEnd == fileSize - ts else {
            throw FormatError("backup image", "block index", at: header.indexOffset,
                              "index (\(header.indexLength) bytes) does not end at the trailer (file is \(fileSize) bytes: truncated or altered)")
        }
        let index = try file.read(at: header.indexOffset, count: Int(header.indexLength))
        stats.addBytesRead(index.count)
        let indexIsIntact = SHA256.hash(index) == header.indexDigest
        let n = Int(header.blockCount)
        var kinds = [UInt8](repeating: 0, count: n), codecs = [UInt8](repeating: 0, count: n)
        var lens = [UInt32](repeating: 0, count: n), offs = [UInt64](repeating: 0, count: n)
        var crcs = [UInt32](repeating: 0, count: n)
        var digests = [UInt8](repeating: 0, count: n * 32)
        let bs = Int(header.blockSize)
        for i in 0..<n {
            let at = header.indexOffset + UInt64(i * IndexEntry.size)
            let e = try IndexEntry.parse(index, at: i * IndexEntry.size, number: i, fileOffset: at)
            func bad(_ field: UInt64, _ reason: String) -> FormatError {
                FormatError("backup image", "block index entry \(i)", at: at + field, reason)
            }
            let plain = min(bs, Int(header.virtualSize - UInt64(i) * UInt64(bs)))
            switch e.kind {
            case .absent, .zero: break
            case .local:
                guard e.storedLength > 0, Int(e.storedLength) <= BlockCoder.maxStoredLength(plainLength: plain, codec: e.codec, encrypted: header.isEncrypted) else {
                    throw bad(4, "stored length \(e.storedLength) out of range for a \(plain)-byte block")
                }
                // Subtraction, not addition: an offset near 2^64 must be refused, not overflow.
                guard e.offset >= hs, e.offset <= header.indexOffset, UInt64(e.storedLength) <= header.indexOffset - e.offset else {
                    throw bad(8, "data at 0x\(String(e.offset, radix: 16))+\(e.storedLength) outside the data area")
                }
            case .vault:
                guard header.usesVault else { throw bad(0, "vault block in an image without a vault") }
            }
            kinds[i] = e.kind.rawValue
            codecs[i] = e.codec.rawValue
            lens[i] = e.storedLength
            offs[i] = e.offset
            crcs[i] = e.payloadCRC
            digests.replaceSubrange(i * 32..<i * 32 + 32, with: e.digest)
        }
        guard indexIsIntact else {
            throw FormatError("backup image", "block index", at: header.indexOffset, "SHA-256 of the index does not match the header")
        }

        var keys: KeySet?
        if header.isEncrypted, let params = header.scrypt {
            let master = try passphrase.master(salt: header.kdfSalt, params: params, for: path)
            let k = KeySet(master: master, id: header.imageID, domain: "image")
            guard Crypto.equal(k.check, header.keyCheck) else { throw BackupImageError.wrongPassphrase(path) }
            keys = k
        }

        var parent: BackupImageReader?
        if header.hasParent {
            guard depth < maxChainDepth else { throw BackupImageError.chainTooDeep(image: path, limit: maxChainDepth) }
            let ppath = resolve(header.parentPath, relativeTo: path)
            let pfile: RawFile
            do { pfile = try RawFile(path: ppath) } catch {
                throw BackupImageError.parentMissing(parent: ppath, child: path, reason: "\(error)")
            }
            let p: BackupImageReader
            do {
                p = try open(file: pfile, path: ppath, passphrase: passphrase, options: options, stats: stats, depth: depth + 1)
            } catch let e as FormatError {
                throw BackupImageError.parentDamaged(parent: ppath, child: path, error: e)
            }
            guard p.header.imageID == header.parentID else {
                throw BackupImageError.parentIdentity(parent: ppath, child: path, found: p.header.imageID, recorded: header.parentID)
            }
            guard p.headerDigest == header.parentHeaderDigest else {
                throw BackupImageError.parentAltered(parent: ppath, child: path)
            }
            guard p.header.virtualSize == header.virtualSize, p.header.blockSize == header.blockSize else {
                throw BackupImageError.parentGeometry(parent: ppath, child: path, parentSize: p.header.virtualSize,
                                                      parentBlockSize: p.header.blockSize, childSize: header.virtualSize,
                                                      childBlockSize: header.blockSize)
            }
            parent = p
        }

        var vault: BackupVault?
        if header.usesVault {
            let dir = options.vaultDirectory ?? resolve(header.vaultPath, relativeTo: path)
            let v = try BackupVault.open(directory: dir, passphrase: passphrase, stats: stats)
            guard v.id == header.vaultID else { throw BackupImageError.vault("\(dir) is vault \(v.id), but \(path) uses \(header.vaultID)") }
            guard v.isEncrypted == header.isEncrypted else { throw BackupImageError.vault("\(dir) encryption disagrees with \(path)") }
            vault = v
        }

        return BackupImageReader(path: path, header: header, headerDigest: headerDigest, parent: parent, vault: vault,
                                 stats: stats, file: file, keys: keys, depth: depth, kinds: kinds, codecs: codecs,
                                 storedLengths: lens, offsets: offs, payloadCRCs: crcs, digests: digests, options: options)
    }

    private init(path: String, header: BackupHeader, headerDigest: [UInt8], parent: BackupImageReader?, vault: BackupVault?,
                 stats: BackupStats, file: any BlockSource, keys: KeySet?, depth: Int, kinds: [UInt8], codecs: [UInt8],
                 storedLengths: [UInt32], offsets: [UInt64], payloadCRCs: [UInt32], digests: [UInt8], options: Options) {
        self.path = path
        self.header = header
        self.headerDigest = headerDigest
        self.parent = parent
        self.vault = vault
        self.stats = stats
        self.file = file
        self.keys = keys
        self.coder = BlockCoder(keys: keys, compression: header.compression, level: Int32(header.compressionLevel))
        self.depth = depth
        self.kinds = kinds
        self.codecs = codecs
        self.storedLengths = storedLengths
        self.offsets = offsets
        self.payloadCRCs = payloadCRCs
        self.digests = digests
        let blocks = max(2, options.cacheBytes / Int(header.blockSize))
        // Parents are only reached through the top image, whose cache holds resolved blocks.
        self.cache = BlockCache(capacity: depth == 0 ? blocks : 1)
        self.readAhead = depth == 0 ? min(max(0, options.readAheadBlocks), blocks / 2) : 0
        self.decodeThreads = max(1, options.decodeThreads)
    }

    static func resolve(_ p: String, relativeTo image: String) -> String {
        if p.hasPrefix("/") { return p }
        guard let slash = image.lastIndex(of: "/") else { return p }
        return String(image[...slash]) + p
    }

    // MARK: block geometry and chain resolution

    public var blockSize: Int { Int(header.blockSize) }
    public var blockCount: Int { Int(header.blockCount) }

    public func plainLength(ofBlock i: Int) -> Int {
        min(blockSize, Int(header.virtualSize - UInt64(i) * UInt64(blockSize)))
    }

    func kind(_ i: Int) -> IndexEntry.Kind { IndexEntry.Kind(rawValue: kinds[i])! }

    /// The image of the chain that holds block `i` (nil: absent everywhere) and its kind there.
    func locate(_ i: Int) -> (reader: BackupImageReader, kind: IndexEntry.Kind)? {
        var r: BackupImageReader? = self
        while let cur = r {
            let k = cur.kind(i)
            if k != .absent { return (cur, k) }
            r = cur.parent
        }
        return nil
    }

    func digest(_ i: Int) -> [UInt8] { Array(digests[i * 32..<i * 32 + 32]) }

    func blockError(_ i: Int, _ reason: String) -> FormatError {
        let at = kind(i) == .local ? offsets[i] : header.indexOffset + UInt64(i * IndexEntry.size)
        return FormatError("backup image", "block \(i) (virtual offset 0x\(String(UInt64(i) * UInt64(blockSize), radix: 16)))\(kind(i) == .vault ? " in vault" : "")",
                           at: at, reason + " [\(path)]")
    }

    /// Decodes block `i` of this very image (which must hold it locally or in the vault) and
    /// verifies it: payload CRC-32C, then GCM tag or SHA-256 (`fullCheck` does both).
    func decodeOwnBlock(_ i: Int, fullCheck: Bool = false) throws -> [UInt8] {
        let plain = plainLength(ofBlock: i)
        var out = [UInt8](repeating: 0, count: plain)
        switch kind(i) {
        case .local:
            try out.withUnsafeMutableBytes { try decodeLocalBlock(i, into: $0, scratch: nil, fullCheck: fullCheck) }
            return out
        case .vault:
            guard let vault else { throw blockError(i, "vault block but no vault") }
            let address = digest(i)
            let got: (codec: BlockCodec, stored: [UInt8])
            do { got = try vault.get(address: address, plainLength: plain) } catch { throw blockError(i, "\(error)") }
            let c = BlockCoder(keys: vault.keys, compression: .none, level: 0)
            return try decodeWith(c, i, got.stored, got.codec, vault.aad(address, plainLength: plain), vault.nonceContext(address),
                                  vault.digestKey, fullCheck, &out)
        case .zero, .absent:
            return out
        }
    }

    /// Decodes block `i` into `out` (exactly its plaintext length), reusing `scratch` instead of
    /// allocating: the streaming path of restore. Same checks, same errors as `decodeOwnBlock`.
    func decodeOwnBlock(_ i: Int, into out: UnsafeMutableRawBufferPointer, scratch: BlockScratch, fullCheck: Bool = false) throws {
        precondition(out.count == plainLength(ofBlock: i), "output buffer must hold exactly one block")
        switch kind(i) {
        case .local:
            try decodeLocalBlock(i, into: out, scratch: scratch, fullCheck: fullCheck)
        case .vault:
            let b = try decodeOwnBlock(i, fullCheck: fullCheck)
            b.withUnsafeBytes { out.copyMemory(from: $0) }
        case .zero, .absent:
            out.initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    /// A block stored in this image: read, CRC-32C of the stored bytes (spec §5), then decrypt,
    /// decompress and digest via the coder.
    ///
    /// Where a cryptographic check already covers every stored byte — the GCM tag of an encrypted
    /// block, the SHA-256 of a plain block stored as is (its stored bytes are its plaintext) — the
    /// CRC-32C cannot reject anything that check accepts, so the read path computes it only when
    /// that check fails, to name the damage exactly as before (a CRC mismatch is reported first).
    /// It was a fifth of the cycles of a plain sequential read (perf; docs/benchmarks.md). Compressed
    /// plain blocks, whose digest covers the plaintext and not the stored bytes, and full checks
    /// (`verify`) compute it first, always.
    private func decodeLocalBlock(_ i: Int, into out: UnsafeMutableRawBufferPointer, scratch: BlockScratch?, fullCheck: Bool) throws {
        let plain = out.count
        let codec = BlockCodec(rawValue: codecs[i])!
        let n = Int(storedLengths[i])
        let failure: String?
        let expected = digest(i)
        let aad = header.imageID.bytes + [UInt8].le64(UInt64(i)) + [UInt8].le32(UInt32(plain))
        let nonceCtx = Array("L".utf8) + [UInt8].le64(UInt64(i)) + expected
        let crcAfterFailureOnly = !fullCheck && (keys != nil || codec == .none)
        func check(_ stored: UnsafeRawBufferPointer, _ opened: UnsafeMutableRawBufferPointer?) throws -> String? {
            stats.addBytesRead(stored.count)
            func crcError() -> FormatError? {
                CRC32C.checksum(stored) == payloadCRCs[i] ? nil : blockError(i, "CRC-32C of the stored bytes does not match the index")
            }
            if !crcAfterFailureOnly, let e = crcError() { throw e }
            // `out` may be `stored` itself (a plain block read straight into place): decoding such
            // a block only verifies it, so `stored` still holds the stored bytes on failure.
            let failure: String?
            do {
                failure = try coder.decode(stored, codec: codec, aad: aad, nonceContext: nonceCtx, expectedDigest: expected,
                                           digestKey: keys?.digestKey, checkDigest: fullCheck, into: out, scratch: opened)
            } catch {
                if crcAfterFailureOnly, let e = crcError() { throw e }
                throw error
            }
            if failure != nil, crcAfterFailureOnly, let e = crcError() { throw e }
            return failure
        }
        if keys == nil && codec == .none && n == plain {
            // Stored as is: the stored bytes are the plaintext, read straight into place.
            try file.read(at: offsets[i], into: out)
            failure = try check(UnsafeRawBufferPointer(out), nil)
        } else if let scratch {
            let stored = scratch.stored(n)
            try file.read(at: offsets[i], into: stored)
            failure = try check(UnsafeRawBufferPointer(stored), scratch.opened(n))
        } else {
            let stored = try file.read(at: offsets[i], count: n)
            failure = try stored.withUnsafeBytes { try check($0, nil) }
        }
        if let failure { throw blockError(i, failure) }
        stats.addDecoded()
    }

    private func decodeWith(_ c: BlockCoder, _ i: Int, _ stored: [UInt8], _ codec: BlockCodec, _ aad: [UInt8], _ nonceCtx: [UInt8],
                            _ digestKey: [UInt8]?, _ fullCheck: Bool, _ out: inout [UInt8]) throws -> [UInt8] {
        let expected = digest(i)
        let failure = try stored.withUnsafeBytes { s in
            try out.withUnsafeMutableBytes { o in
                try c.decode(s, codec: codec, aad: aad, nonceContext: nonceCtx, expectedDigest: expected,
                             digestKey: digestKey, checkDigest: fullCheck, into: o)
            }
        }
        if let failure { throw blockError(i, failure) }
        stats.addDecoded()
        return out
    }

    /// A decoded copy of block `i` of this image for the cache, decoded through `scratch`.
    func decodeOwnBlockToArray(_ i: Int, scratch: BlockScratch) throws -> [UInt8] {
        let plain = plainLength(ofBlock: i)
        return try [UInt8](unsafeUninitializedCapacity: plain) { buf, count in
            // `count` stays 0 on a throw, so the uninitialized bytes are never exposed.
            try decodeOwnBlock(i, into: UnsafeMutableRawBufferPointer(buf), scratch: scratch)
            count = plain
        }
    }

    /// The plaintext of block `i`, resolved through the chain, through the cache (nil: zero or
    /// absent). The writer compares an incremental's blocks with its parent's through it.
    func block(_ i: Int) throws -> [UInt8]? {
        guard let (owner, k) = locate(i), k == .local || k == .vault else { return nil }
        let (v, hit) = try withScratch { s in try cache.get(i) { try owner.decodeOwnBlockToArray(i, scratch: s) } }
        if hit { stats.addHit() } else { stats.addMiss() }
        return v
    }

    private func withScratch<T>(_ body: (BlockScratch) throws -> T) rethrows -> T {
        let s = scratchPool.withLock { $0.popLast() } ?? BlockScratch()
        defer { scratchPool.withLock { if $0.count < 16 { $0.append(s) } } }
        return try body(s)
    }

    /// One block's share of a request that needs decoding: straight into the caller's buffer
    /// (`direct`: the request covers the whole block and no one else is decoding it), or through
    /// the cache (part of a block, or a block a read-ahead is already decoding).
    private struct Job {
        let block: Int
        let owner: BackupImageReader
        let within: Int
        let dst: UnsafeMutableRawBufferPointer
        let direct: Bool
    }

    private func run(_ job: Job, scratch: BlockScratch) throws {
        if job.direct {
            try job.owner.decodeOwnBlock(job.block, into: job.dst, scratch: scratch)
            stats.addMiss()
            return
        }
        let (v, hit) = try cache.get(job.block) { try job.owner.decodeOwnBlockToArray(job.block, scratch: scratch) }
        if hit { stats.addHit() } else { stats.addMiss() }
        v.withUnsafeBytes { job.dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[job.within..<job.within + job.dst.count])) }
    }

    /// Runs the jobs of one request, in parallel when there are several. On failure no new job is
    /// started and the error of the lowest failing block is thrown (the one a block-by-block reader
    /// would have met first).
    private func run(_ jobs: [Job]) throws {
        let workers = min(decodeThreads, jobs.count)
        if workers <= 1 {
            try withScratch { s in for j in jobs { try run(j, scratch: s) } }
            return
        }
        let next = Atomic<Int>(0)
        let failure = Locked<(block: Int, error: any Error)?>(nil)
        nonisolated(unsafe) let jobs = jobs  // read-only here; the buffers they point at are disjoint
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            withScratch { s in
                while failure.current == nil {
                    let w = next.wrappingAdd(1, ordering: .relaxed).oldValue
                    guard w < jobs.count else { break }
                    do { try run(jobs[w], scratch: s) } catch {
                        failure.withLock { f in if f == nil || f!.block > jobs[w].block { f = (jobs[w].block, error) } }
                    }
                }
            }
        }
        if let f = failure.current { throw f.error }
    }

    /// Sequential pattern (this request starts in or right after the previous one's last block):
    /// claim the next blocks in the cache and decode them in the background. The window is
    /// `readAheadBlocks`, or twice the request when that is larger, at most half the cache; blocks
    /// already cached or being decoded are skipped, and no more than one window is in flight.
    /// `readAhead` false (a request large enough to occupy the workers) only tracks the pattern.
    private func noteAccess(first: Int, last: Int, readAhead wanted: Bool) {
        guard readAhead > 0 else { return }
        let sequential = streak.withLock { s -> Bool in
            if first == s.last || first == s.last + 1 { s.run += 1 } else { s.run = 0 }
            s.last = last
            return s.run >= 1
        }
        guard sequential, wanted else { return }
        let window = min(max(readAhead, 2 * (last - first + 1)), max(1, cacheCapacity / 2))
        var j = last + 1
        while j < min(blockCount, last + 1 + window) {
            defer { j += 1 }
            guard let (owner, k) = locate(j), k == .local || k == .vault else { continue }
            let admitted = readAheadInFlight.withLock { n -> Bool in
                guard n < window else { return false }
                n += 1
                return true
            }
            guard admitted else { return }
            guard cache.reserve(j) else { readAheadInFlight.withLock { $0 -= 1 }; continue }
            stats.addReadAhead()
            let block = j
            DispatchQueue.global().async { [self] in
                // Errors surface when the block is actually read (the claim is given up).
                let v = try? withScratch { try owner.decodeOwnBlockToArray(block, scratch: $0) }
                cache.complete(block, with: v)
                readAheadInFlight.withLock { $0 -= 1 }
            }
        }
    }

    private var cacheCapacity: Int { cache.capacity }
    /// Decoded blocks held in the cache now (tests check the bound).
    var cachedBlocks: Int { cache.count }

    // MARK: BlockSource

    /// Blocks the request covers entirely are decoded straight into `buffer` (no copy), several
    /// at a time; parts of blocks go through the cache, which also serves read-ahead and re-reads.
    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        let bs = UInt64(blockSize)
        let end = offset + UInt64(buffer.count)
        let first = Int(offset / bs), last = Int((end - 1) / bs)
        var jobs: [Job] = []
        for i in first...last {
            let start = UInt64(i) * bs
            let lo = max(offset, start), hi = min(end, start + UInt64(plainLength(ofBlock: i)))
            let dst = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(lo - offset)..<Int(hi - offset)])
            let within = Int(lo - start)
            guard let (owner, k) = locate(i), k == .local || k == .vault else {
                dst.initializeMemory(as: UInt8.self, repeating: 0)
                continue
            }
            switch cache.peek(i) {
            case let .value(v):
                stats.addHit()
                v.withUnsafeBytes { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[within..<within + dst.count])) }
            case .loading:
                jobs.append(Job(block: i, owner: owner, within: within, dst: dst, direct: false))
            case .none:
                let whole = within == 0 && dst.count == plainLength(ofBlock: i)
                jobs.append(Job(block: i, owner: owner, within: within, dst: dst, direct: whole))
            }
        }
        // Requests spanning two blocks per worker keep the workers busy by themselves (the next
        // one brings as many): reading ahead of them would only add a copy out of the cache per
        // block (13% more CPU on 4 MiB sequential reads, docs/benchmarks.md). The pattern is
        // still tracked.
        noteAccess(first: first, last: last, readAhead: last - first + 1 < 2 * decodeThreads)
        try run(jobs)
    }

    /// Zero-marked blocks are `.zero`; blocks no image of the chain holds are `.absent`.
    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        let bs = UInt64(blockSize)
        var out: [Extent] = []
        var pos = r.lowerBound
        while pos < r.upperBound {
            let i = Int(pos / bs)
            let end = min(r.upperBound, UInt64(i + 1) * bs)
            let kind: ExtentKind
            switch locate(i)?.kind {
            case .none, .absent?: kind = .absent
            case .zero?: kind = .zero
            case .local?, .vault?: kind = .data
            }
            out.append(Extent(offset: pos, length: end - pos, kind: kind))
            pos = end
        }
        return coalesce(out)
    }

    /// The images of the chain, this one first.
    public var chain: [BackupImageReader] {
        var out: [BackupImageReader] = []
        var r: BackupImageReader? = self
        while let c = r { out.append(c); r = c.parent }
        return out
    }
}
