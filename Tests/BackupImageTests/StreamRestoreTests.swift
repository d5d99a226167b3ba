import Testing
import Foundation
import BlockCore
@testable import BackupImage

/// The parallel restore path: same bytes as `read`, every block verified, the cache untouched,
/// and on damage the error of the first damaged block, whatever the thread count.
@Suite struct StreamRestoreTests {
    @Test(arguments: [BlockCodec.zstd, .none], [false, true])
    func restoreEqualsReadsAndBypassesTheCache(codec: BlockCodec, encrypt: Bool) throws {
        let dir = try scratchDirectory()
        var bytes = makeContent(size: (3 << 20) + 4097, seed: 8)
        // Whole zero blocks (index markers) and a block that is all zero but for its last byte.
        bytes.replaceSubrange(0..<(2 << 16), with: [UInt8](repeating: 0, count: 2 << 16))
        bytes.replaceSubrange((5 << 16)..<(6 << 16), with: [UInt8](repeating: 0, count: 1 << 16))
        bytes[(6 << 16) - 1] = 1
        try writeFile(dir + "/s.raw", bytes)
        _ = try BackupImageWriter.create(sourcePath: dir + "/s.raw", outputPath: dir + "/s.bli",
                                         options: options(compression: codec, encrypt: encrypt))
        for threads in [1, 2, 3] {
            let stats = BackupStats()
            let r = try BackupImageReader.open(path: dir + "/s.bli", passphrase: testPassphrase, stats: stats)
            let stored = (0..<r.blockCount).filter { r.kind($0) == .local }.count
            let out = "\(dir)/out-\(threads).raw"
            try BackupRestore.restore(r, to: out, threads: threads)
            #expect(try readFile(out) == bytes)
            #expect(stats.blocksDecoded == UInt64(stored), "each stored block decoded exactly once")
            #expect(stats.cacheHits == 0 && stats.cacheMisses == 0 && stats.readAheadBlocks == 0, "restore went through the cache")
            // Zero-marked blocks stay holes.
            let f = try RawFile(path: out)
            #expect(try f.extents(in: 0..<(2 << 16)).allSatisfy { $0.kind != .data })
        }
    }

    @Test func everyStoredBlockIsDeliveredOnceAtItsOffset() throws {
        let dir = try scratchDirectory()
        let bytes = makeContent(size: 2 << 20, seed: 31)
        try writeFile(dir + "/s.raw", bytes)
        _ = try BackupImageWriter.create(sourcePath: dir + "/s.raw", outputPath: dir + "/s.bli", options: options())
        let r = try BackupImageReader.open(path: dir + "/s.bli")
        let seen = Locked<[UInt64: [UInt8]]>([:])
        try r.forEachStoredBlock(threads: 2) { offset, plain in
            let copy = Array(plain)
            seen.withLock { s in
                #expect(s[offset] == nil, "block at \(offset) delivered twice")
                s[offset] = copy
            }
        }
        let all = seen.current
        #expect(all.count == (0..<r.blockCount).filter { r.kind($0) == .local }.count)
        for (offset, plain) in all {
            #expect(plain == Array(bytes[Int(offset)..<Int(offset) + plain.count]))
        }
    }

    @Test(arguments: [false, true])
    func damageReportsTheFirstDamagedBlock(encrypt: Bool) throws {
        let dir = try scratchDirectory()
        let (path, _) = try DamageTests.image(encrypt: encrypt, dir: dir)
        let r0 = try BackupImageReader.open(path: path, passphrase: testPassphrase)
        let local = (0..<r0.blockCount).filter { r0.kind($0) == .local }
        try #require(local.count >= 6)
        let first = local[2], second = local[5]
        for v in [second, first] {
            try flipBit(path, at: r0.offsets[v] + UInt64(r0.storedLengths[v] / 2), bit: 1)
        }
        for threads in [1, 2, 4] {
            let r = try BackupImageReader.open(path: path, passphrase: testPassphrase)
            do {
                try BackupRestore.restore(r, to: "\(dir)/out-\(threads).raw", threads: threads)
                Issue.record("damaged image restored without error")
            } catch let e as FormatError {
                #expect(e.structure.hasPrefix("block \(first) "), "threads \(threads): \(e)")
                #expect(e.offset == r0.offsets[first])
            }
        }
    }

    /// Bits of `bytes` (among the first 64 from `at`) whose joint flip leaves its CRC-32C unchanged:
    /// 64 deltas in a 32-bit space are linearly dependent (Gaussian elimination over GF(2)).
    static func crcPreservingFlips(_ bytes: [UInt8], at: Int) -> [Int] {
        let base = CRC32C.checksum(bytes)
        var rows: [(delta: UInt32, mask: UInt64)] = []
        for bit in 0..<64 {
            var b = bytes
            b[at + bit / 8] ^= 1 << UInt8(bit % 8)
            var row = (delta: CRC32C.checksum(b) ^ base, mask: UInt64(1) << UInt64(bit))
            for r in rows where row.delta & (1 << UInt32(31 - r.delta.leadingZeroBitCount)) != 0 {
                row.delta ^= r.delta
                row.mask ^= r.mask
            }
            if row.delta == 0 { return (0..<64).filter { row.mask & (1 << UInt64($0)) != 0 } }
            // Keep rows reduced on distinct leading bits.
            rows = rows.map { r in r.delta & (1 << UInt32(31 - row.delta.leadingZeroBitCount)) != 0 ? (r.delta ^ row.delta, r.mask ^ row.mask) : r }
            rows.append(row)
        }
        return []
    }

    /// Stored bytes altered so that their CRC-32C still matches: only the SHA-256 of the plaintext
    /// can catch it, so this proves the restore path still checks it (plain images).
    @Test func plainBlocksAreCheckedAgainstTheirDigest() throws {
        let dir = try scratchDirectory()
        var rng = TestRNG(12)
        try writeFile(dir + "/s.raw", rng.bytes(4 << 16))
        _ = try BackupImageWriter.create(sourcePath: dir + "/s.raw", outputPath: dir + "/s.bli", options: options(compression: .none))
        let r = try BackupImageReader.open(path: dir + "/s.bli")
        try #require(r.kind(2) == .local && r.codecs[2] == BlockCodec.none.rawValue)
        var stored = try RawFile(path: dir + "/s.bli").read(at: r.offsets[2], count: Int(r.storedLengths[2]))
        let flips = Self.crcPreservingFlips(stored, at: 100)
        try #require(!flips.isEmpty)
        for bit in flips { stored[100 + bit / 8] ^= 1 << UInt8(bit % 8) }
        #expect(CRC32C.checksum(stored) == r.payloadCRCs[2])
        // The reader already holds the index; the block's bytes change under it.
        try RawFile(path: dir + "/s.bli", writable: true).write(at: r.offsets[2], stored)
        for threads in [1, 2] {
            do {
                try BackupRestore.restore(r, to: "\(dir)/out-\(threads).raw", threads: threads)
                Issue.record("altered block restored without error")
            } catch let e as FormatError {
                #expect(e.structure.hasPrefix("block 2 ") && e.reason.contains("SHA-256"), "\(e)")
            }
        }
    }
}
