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
}
