import Testing
import Foundation
import BlockCore
@testable import BackupImage

@Suite struct DamageTests {
    static func image(encrypt: Bool, dir: String) throws -> (String, [UInt8]) {
        let bytes = makeContent(size: 1 << 20, seed: 21)
        try writeFile(dir + "/s.raw", bytes)
        _ = try BackupImageWriter.create(sourcePath: dir + "/s.raw", outputPath: dir + "/s.bli", options: options(encrypt: encrypt))
        return (dir + "/s.bli", bytes)
    }

    @Test(arguments: [false, true])
    func flippedBitInADataBlock(encrypt: Bool) throws {
        let dir = try scratchDirectory()
        let (path, _) = try Self.image(encrypt: encrypt, dir: dir)
        let r0 = try BackupImageReader.open(path: path, passphrase: testPassphrase)
        let victim = (0..<r0.blockCount).first { r0.kind($0) == .local && $0 > 3 }!
        let fileOffset = r0.offsets[victim] + UInt64(r0.storedLengths[victim] / 2)
        try flipBit(path, at: fileOffset, bit: 3)
        let report = BackupImageReader.verify(path: path, passphrase: testPassphrase)
        #expect(report.exitCode == 2 && report.findings.count == 1)
        #expect(report.findings[0].block == victim && report.findings[0].fileOffset == r0.offsets[victim])
        #expect(report.findings[0].message.contains("block \(victim) "))
        let r = try BackupImageReader.open(path: path, passphrase: testPassphrase)
        do {
            _ = try r.read(at: UInt64(victim) * 65_536 + 10, count: 10)
            Issue.record("damaged block read without error")
        } catch let e as FormatError {
            #expect(e.structure.hasPrefix("block \(victim) (virtual offset 0x\(String(victim * 65_536, radix: 16)))"))
            #expect(e.offset == r0.offsets[victim])
        }
        // Other blocks still read.
        #expect(try r.read(at: 0, count: 100).count == 100)
    }

    @Test func flippedBitInTheIndexOrHeader() throws {
        let dir = try scratchDirectory()
        let (path, _) = try Self.image(encrypt: false, dir: dir)
        let (h, _) = try BackupImageReader.readHeader(path: path)
        let entryOffset = h.indexOffset + 5 * 64 + 20
        try flipBit(path, at: entryOffset)
        do { _ = try BackupImageReader.open(path: path); Issue.record("opened") } catch let e as FormatError {
            #expect(e.structure == "block index entry 5")
        }
        #expect(BackupImageReader.verify(path: path).exitCode == 2)
        try flipBit(path, at: entryOffset)
        #expect(BackupImageReader.verify(path: path).isClean)
        for off: UInt64 in [0, 90, 300, 2000] {
            try flipBit(path, at: off)
            #expect(throws: FormatError.self) { try BackupImageReader.open(path: path) }
            #expect(BackupImageReader.verify(path: path).exitCode == 2)
            try flipBit(path, at: off)
        }
        // Trailer damage too.
        let size = try RawFile(path: path).size
        try flipBit(path, at: size - 40)
        #expect(throws: FormatError.self) { try BackupImageReader.open(path: path) }
    }

    @Test func truncationIsDetected() throws {
        let dir = try scratchDirectory()
        let (path, _) = try Self.image(encrypt: false, dir: dir)
        let full = try readFile(path)
        for cut in [full.count - 1, full.count - 64, full.count / 2, 4096, 100, 0] {
            try writeFile(dir + "/t.bli", Array(full[0..<cut]))
            #expect(throws: (any Error).self) { try BackupImageReader.open(path: dir + "/t.bli") }
            try FileManager.default.removeItem(atPath: dir + "/t.bli")
        }
    }

    @Test func wrongPassphraseFailsAtOpen() throws {
        let dir = try scratchDirectory()
        let (path, _) = try Self.image(encrypt: true, dir: dir)
        #expect(throws: BackupImageError.wrongPassphrase(path)) {
            try BackupImageReader.open(path: path, passphrase: .bytes(Array("wrong".utf8)))
        }
        do { _ = try BackupImageReader.open(path: path, passphrase: nil); Issue.record("opened") } catch let e as BackupImageError {
            guard case .passphraseRequired = e else { Issue.record("\(e)"); return }
        }
        // The header alone needs no passphrase.
        #expect(try BackupImageReader.readHeader(path: path).header.isEncrypted)
    }

    @Test func hostileInputGivesTypedErrors() throws {
        var rng = TestRNG(99)
        let dir = try scratchDirectory()
        let (path, _) = try Self.image(encrypt: false, dir: dir)
        let good = try readFile(path)
        for trial in 0..<300 {
            var b = good
            for _ in 0..<(1 + trial % 4) { b[Int(rng.below(UInt64(b.count)))] = UInt8(truncatingIfNeeded: rng.next()) }
            if let r = try? BackupImageReader.open(source: MemorySource(b), path: "x.bli") {
                _ = r.verifyBlocks()
            }
        }
        // A header claiming a huge index in a small file is refused without allocating it.
        var h = try BackupHeader.parse(good)
        h.virtualSize = 1 << 50
        h.blockSize = 64 << 10
        h.blockCount = UInt32.max
        h.indexLength = UInt64(UInt32.max) * 64
        #expect(throws: FormatError.self) { try BackupImageReader.open(source: MemorySource(h.encode() + [UInt8](repeating: 0, count: 64)), path: "x") }
        h.scrypt = ScryptParameters(log2N: 40, r: 8, p: 1)
        h.flags.insert(.encrypted)
        #expect(throws: FormatError.self) { try BackupHeader.parse(h.encode()) }
    }
}

@Suite struct ReaderBehaviourTests {
    @Test func concurrentRandomReads() throws {
        let dir = try scratchDirectory()
        let bytes = makeContent(size: 3 << 20, seed: 31)
        try writeFile(dir + "/c.raw", bytes)
        _ = try BackupImageWriter.create(sourcePath: dir + "/c.raw", outputPath: dir + "/c.bli", options: options(encrypt: true))
        var ro = BackupImageReader.Options()
        ro.cacheBytes = 8 * 65_536  // small, so threads contend on eviction and reloads
        let r = try BackupImageReader.open(path: dir + "/c.bli", passphrase: testPassphrase, options: ro)
        let failures = Locked(0)
        DispatchQueue.concurrentPerform(iterations: 16) { t in
            let ok = (try? checkRandomReads(r, bytes, count: 60, seed: UInt64(1000 + t))) ?? false
            if !ok { failures.withLock { $0 += 1 } }
        }
        #expect(failures.current == 0)
    }

    @Test func headerWithoutDataAndCacheHits() throws {
        let dir = try scratchDirectory()
        var rng = TestRNG(41)
        try writeFile(dir + "/h.raw", rng.bytes(1 << 20))
        _ = try BackupImageWriter.create(sourcePath: dir + "/h.raw", outputPath: dir + "/h.bli", options: options(seed: "h"))
        let before = BackupStats.process.blocksDecoded
        let (h, digest) = try BackupImageReader.readHeader(path: dir + "/h.bli")
        #expect(h.imageID == BackupCreateOptions.imageID(seed: "h"))
        #expect(BackupStats.process.blocksDecoded >= before)
        var o = BackupImageReader.Options()
        o.readAheadBlocks = 0
        let stats = BackupStats()
        let r = try BackupImageReader.open(path: dir + "/h.bli", options: o, stats: stats)
        #expect(r.headerDigest == digest)
        #expect(stats.opens == 1 && stats.blocksDecoded == 0)
        let readAtOpen = stats.bytesRead
        #expect(readAtOpen < 8192, "open reads header, trailer and index only")
        _ = try r.read(at: 70_000, count: 100)
        _ = try r.read(at: 70_100, count: 100)
        #expect(stats.blocksDecoded == 1 && stats.cacheMisses == 1 && stats.cacheHits == 1)
    }

    @Test func sequentialReadsTriggerReadAhead() throws {
        let dir = try scratchDirectory()
        var rng = TestRNG(51)
        let bytes = rng.bytes(1 << 20)
        try writeFile(dir + "/q.raw", bytes)
        _ = try BackupImageWriter.create(sourcePath: dir + "/q.raw", outputPath: dir + "/q.bli", options: options())
        let stats = BackupStats()
        let r = try BackupImageReader.open(path: dir + "/q.bli", stats: stats)
        var got: [UInt8] = []
        for i in 0..<16 { got += try r.read(at: UInt64(i) * 65_536, count: 65_536) }
        #expect(got == bytes)
        #expect(stats.readAheadBlocks > 0)
        #expect(stats.blocksDecoded <= 16)
    }

    @Test func magicCheck() throws {
        #expect(BackupImageReader.looksLikeBackupImage(firstBytes: BackupHeader().encode()))
        #expect(!BackupImageReader.looksLikeBackupImage(firstBytes: Array("vhdxfile".utf8)))
    }

    @Test func passphraseFromFileAndEnvironment() throws {
        let dir = try scratchDirectory()
        try writeFile(dir + "/pw", Array("s3cret\n".utf8))
        #expect(try PassphraseSource.file(dir + "/pw").resolve() == Array("s3cret".utf8))
        setenv("BOOTLAB_TEST_PW", "envpw", 1)
        #expect(try PassphraseSource.environment("BOOTLAB_TEST_PW").resolve() == Array("envpw".utf8))
        #expect(PassphraseSource.standard(file: dir + "/pw") == .file(dir + "/pw"))
    }
}
