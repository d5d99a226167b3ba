import Testing
import Foundation
import Dispatch
import BlockCore
@testable import BackupImage

/// The sequential and large-read path of `BackupImageReader.read(at:into:)`: whole blocks decoded
/// straight into the caller's buffer, several in parallel, read-ahead into the bounded cache.
@Suite struct ReadPathTests {
    static func image(encrypt: Bool, compression: BlockCodec = .zstd, dir: String, size: Int = 2 << 20) throws -> (String, [UInt8]) {
        let bytes = makeContent(size: size, seed: 77)
        try writeFile(dir + "/r.raw", bytes)
        _ = try BackupImageWriter.create(sourcePath: dir + "/r.raw", outputPath: dir + "/r.bli",
                                         options: options(compression: compression, encrypt: encrypt))
        return (dir + "/r.bli", bytes)
    }

    static func reader(_ path: String, threads: Int, readAhead: Int = 4, cacheBytes: Int = 64 << 20,
                       stats: BackupStats = BackupStats()) throws -> BackupImageReader {
        var o = BackupImageReader.Options()
        o.decodeThreads = threads
        o.readAheadBlocks = readAhead
        o.cacheBytes = cacheBytes
        return try BackupImageReader.open(path: path, passphrase: testPassphrase, options: o, stats: stats)
    }

    /// Every request size (inside a block, across blocks, many blocks, unaligned), every thread
    /// count, encrypted or not, compressed or not: the bytes are the source's.
    @Test(arguments: [(false, BlockCodec.zstd), (true, .zstd), (false, .none), (true, .none)])
    func largeAndSequentialReadsReturnTheSourceBytes(encrypt: Bool, compression: BlockCodec) throws {
        let dir = try scratchDirectory()
        let (path, bytes) = try Self.image(encrypt: encrypt, compression: compression, dir: dir)
        for threads in [1, 4] {
            for chunk in [4096, 65_536, 100_000, 262_144, 1 << 20, 3 << 20] {
                let r = try Self.reader(path, threads: threads)
                var got: [UInt8] = []
                var off = 0
                while off < bytes.count {
                    got += try r.read(at: UInt64(off), count: min(chunk, bytes.count - off))
                    off += chunk
                }
                #expect(got == bytes, "threads \(threads), chunk \(chunk)")
                // Again on the same reader: cache hits, read-ahead leftovers and direct decodes mixed.
                #expect(try r.read(at: 12_345, count: bytes.count - 20_000) == Array(bytes[12_345..<bytes.count - 7_655]))
            }
        }
    }

    /// A large request over two damaged blocks fails with the typed error of the lower one, whether
    /// it is decoded straight into the buffer or through the cache, on one thread or several.
    @Test(arguments: [false, true])
    func damagedBlocksInALargeReadNameTheFirstOne(encrypt: Bool) throws {
        let dir = try scratchDirectory()
        let (path, _) = try Self.image(encrypt: encrypt, dir: dir)
        let r0 = try BackupImageReader.open(path: path, passphrase: testPassphrase)
        let local = (0..<r0.blockCount).filter { r0.kind($0) == .local && $0 > 2 }
        let (a, b) = (local[1], local[local.count - 2])
        for v in [a, b] { try flipBit(path, at: r0.offsets[v] + UInt64(r0.storedLengths[v] / 2), bit: 5) }
        for threads in [1, 4] {
            for start in [0, 65_536 * UInt64(a) + 100] {  // whole blocks (direct), then a partial first block
                let r = try Self.reader(path, threads: threads)
                do {
                    _ = try r.read(at: start, count: Int(r.size - start))
                    Issue.record("damaged blocks read without error")
                } catch let e as FormatError {
                    #expect(e.structure.hasPrefix("block \(a) (virtual offset 0x\(String(a * 65_536, radix: 16)))"), "threads \(threads)")
                    #expect(e.offset == r0.offsets[a])
                }
                // The damaged block's error does not stick to its neighbours, nor to later reads.
                #expect(try r.read(at: UInt64(a + 1) * 65_536, count: 65_536).count == 65_536)
                #expect(throws: FormatError.self) { try r.read(at: UInt64(a) * 65_536, count: 65_536) }
            }
        }
        // Read-ahead meets the damage first: the error still surfaces at the read, typed.
        let r = try Self.reader(path, threads: 1, readAhead: 8)
        for i in 0..<a { _ = try r.read(at: UInt64(i) * 65_536, count: 65_536) }
        do { _ = try r.read(at: UInt64(a) * 65_536, count: 65_536); Issue.record("read") } catch let e as FormatError {
            #expect(e.structure.hasPrefix("block \(a) "))
        }
    }

    /// Sequential readers decode each block once (the read-ahead claims a block before it starts,
    /// so a reader arriving meanwhile waits instead of decoding it again), and the cache stays
    /// within its bound however far the read-ahead runs.
    @Test func readAheadDecodesOnceAndStaysBounded() throws {
        let dir = try scratchDirectory()
        let (path, bytes) = try Self.image(encrypt: true, dir: dir, size: 4 << 20)
        let stats = BackupStats()
        let r = try Self.reader(path, threads: 2, readAhead: 16, cacheBytes: 8 * 65_536, stats: stats)
        var got: [UInt8] = []
        for off in stride(from: 0, to: bytes.count, by: 32_768) { got += try r.read(at: UInt64(off), count: 32_768) }
        #expect(got == bytes)
        let stored = (0..<r.blockCount).filter { r.kind($0) == .local }.count
        #expect(stats.readAheadBlocks > 0)
        #expect(stats.blocksDecoded <= UInt64(stored))
        #expect(r.cachedBlocks <= 8)
    }

    /// Sequential requests spanning two blocks per decode worker keep the workers busy by
    /// themselves and are not read ahead of (no block copied out of the cache); smaller sequential
    /// requests are. The bytes are the source's either way.
    @Test func onlyRequestsTooSmallToOccupyTheWorkersReadAhead() throws {
        let dir = try scratchDirectory()
        let (path, bytes) = try Self.image(encrypt: false, dir: dir, size: 4 << 20)
        for (chunk, readsAhead) in [(8 * 65_536, false), (4 * 65_536, false), (3 * 65_536, true), (65_536, true), (4096, true)] {
            let stats = BackupStats()
            let r = try Self.reader(path, threads: 2, readAhead: 4, stats: stats)
            var got: [UInt8] = []
            for off in stride(from: 0, to: bytes.count, by: chunk) { got += try r.read(at: UInt64(off), count: min(chunk, bytes.count - off)) }
            #expect(got == bytes, "chunk \(chunk)")
            #expect((stats.readAheadBlocks > 0) == readsAhead, "chunk \(chunk): \(stats.readAheadBlocks) blocks read ahead")
        }
    }

    /// Many threads streaming different parts of the image at once, with a cache too small for
    /// them all (eviction, claims and waits under contention): every byte right.
    @Test func concurrentSequentialReaders() throws {
        let dir = try scratchDirectory()
        let (path, bytes) = try Self.image(encrypt: true, dir: dir, size: 3 << 20)
        let r = try Self.reader(path, threads: 2, readAhead: 4, cacheBytes: 6 * 65_536)
        let failures = Locked(0)
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            let chunk = [4096, 65_536, 200_000, 1 << 20][t % 4]
            var off = (t * 300_007) % bytes.count
            var ok = true
            for _ in 0..<24 {
                let n = min(chunk, bytes.count - off)
                if (try? r.read(at: UInt64(off), count: n)) != Array(bytes[off..<off + n]) { ok = false }
                off = (off + n) % bytes.count
            }
            if !ok { failures.withLock { $0 += 1 } }
        }
        #expect(failures.current == 0)
    }

    /// The read path computes a block's CRC-32C only after its GCM tag or SHA-256 fails, where
    /// those cover every stored byte (encrypted blocks; plain blocks stored as is): damage is still
    /// named by the CRC first, exactly as when it was computed up front, for every kind of block,
    /// through the direct and the cached path, on one thread and several. `verify` still finds it.
    @Test(arguments: [(false, BlockCodec.zstd), (true, .zstd), (false, .none), (true, .none)])
    func damageIsNamedByTheCRCWhicheverCheckRunsFirst(encrypt: Bool, compression: BlockCodec) throws {
        let dir = try scratchDirectory()
        let (path, bytes) = try Self.image(encrypt: encrypt, compression: compression, dir: dir)
        let r0 = try BackupImageReader.open(path: path, passphrase: testPassphrase)
        let victim = try #require((0..<r0.blockCount).first { r0.kind($0) == .local && $0 > 2 && $0 < r0.blockCount - 2 })
        try flipBit(path, at: r0.offsets[victim] + UInt64(r0.storedLengths[victim] / 3), bit: 6)
        let bs = UInt64(r0.blockSize)
        for threads in [1, 4] {
            // Whole blocks (decoded into the caller's buffer), then part of the block (cache).
            for (start, count) in [(UInt64(victim - 1) * bs, Int(3 * bs)), (UInt64(victim) * bs + 100, 1000)] {
                let r = try Self.reader(path, threads: threads, readAhead: 0)
                do {
                    _ = try r.read(at: start, count: count)
                    Issue.record("damaged block read without error (threads \(threads), at \(start))")
                } catch let e as FormatError {
                    #expect(e.structure.hasPrefix("block \(victim) ") && e.reason.contains("CRC-32C of the stored bytes"), "\(e)")
                    #expect(e.offset == r0.offsets[victim])
                }
                // The neighbours are intact and read their source bytes.
                let next = Int(UInt64(victim + 1) * bs)
                #expect(try r.read(at: UInt64(next), count: Int(bs)) == Array(bytes[next..<next + Int(bs)]))
            }
        }
        let report = BackupImageReader.verify(path: path, passphrase: testPassphrase)
        #expect(report.findings.count == 1 && report.findings.first?.message.contains("CRC-32C") == true, "\(report.findings)")
    }

    /// A plain block stored as is, altered so that its CRC-32C still matches: the SHA-256 of its
    /// plaintext (checked on every read) rejects it, on the direct path and through the cache.
    @Test func crcPreservingDamageOfAStoredPlainBlockFailsItsDigest() throws {
        let dir = try scratchDirectory()
        var rng = TestRNG(19)
        let bytes = rng.bytes(8 << 16)
        try writeFile(dir + "/s.raw", bytes)
        _ = try BackupImageWriter.create(sourcePath: dir + "/s.raw", outputPath: dir + "/s.bli", options: options(compression: .none))
        let r0 = try BackupImageReader.open(path: dir + "/s.bli")
        try #require(r0.kind(3) == .local && r0.codecs[3] == BlockCodec.none.rawValue)
        var stored = try RawFile(path: dir + "/s.bli").read(at: r0.offsets[3], count: Int(r0.storedLengths[3]))
        let flips = StreamRestoreTests.crcPreservingFlips(stored, at: 500)
        try #require(!flips.isEmpty)
        for bit in flips { stored[500 + bit / 8] ^= 1 << UInt8(bit % 8) }
        #expect(CRC32C.checksum(stored) == r0.payloadCRCs[3])
        try RawFile(path: dir + "/s.bli", writable: true).write(at: r0.offsets[3], stored)
        for threads in [1, 4] {
            for (start, count) in [(UInt64(2 << 16), 3 << 16), (UInt64(3 << 16) + 7, 100)] {
                let r = try Self.reader(dir + "/s.bli", threads: threads, readAhead: 0)
                do {
                    _ = try r.read(at: start, count: count)
                    Issue.record("altered block read without error")
                } catch let e as FormatError {
                    #expect(e.structure.hasPrefix("block 3 ") && e.reason.contains("SHA-256"), "\(e)")
                }
            }
        }
    }
}
