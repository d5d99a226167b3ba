import Testing
import Foundation
import BlockCore
@testable import BackupImage

@Suite struct ChainTests {
    /// Base plus three incrementals, each changing a few blocks; every level restores exactly.
    @Test(arguments: [false, true])
    func chainOfThree(encrypt: Bool) throws {
        let dir = try scratchDirectory()
        var content = makeContent(size: 2 << 20, seed: 77)
        var versions: [[UInt8]] = []
        var rng = TestRNG(3)
        var prev: String?
        for level in 0...3 {
            if level > 0 {
                for _ in 0..<3 {
                    let at = Int(rng.below(UInt64(content.count - 70_000)))
                    content.replaceSubrange(at..<at + 70_000, with: rng.bytes(70_000))
                }
                // A block that becomes zero must read as zero, not as the parent's data.
                content.replaceSubrange(level * 65_536..<(level + 1) * 65_536, with: [UInt8](repeating: 0, count: 65_536))
            }
            versions.append(content)
            let src = "\(dir)/v\(level).raw", out = "\(dir)/v\(level).bli"
            try writeFile(src, content)
            var o = options(encrypt: encrypt)
            o.parentPath = prev
            let s = try BackupImageWriter.create(sourcePath: src, outputPath: out, options: o)
            if level > 0 {
                #expect(s.inheritedBlocks > s.blocks / 2, "incremental \(level) stores only changed blocks")
                #expect(s.localBlocks <= 12)
            }
            prev = out
        }
        for level in 0...3 {
            let r = try BackupImageReader.open(path: "\(dir)/v\(level).bli", passphrase: testPassphrase)
            #expect(r.chain.count == level + 1)
            #expect(try r.read(at: 0, count: versions[level].count) == versions[level])
            #expect(try checkRandomReads(r, versions[level], count: 30, seed: UInt64(level)))
            try BackupRestore.restore(r, to: "\(dir)/v\(level).out")
            #expect(try readFile("\(dir)/v\(level).out") == versions[level])
        }
        #expect(BackupImageReader.verify(path: "\(dir)/v3.bli", passphrase: testPassphrase).isClean)
    }

    @Test func missingOrAlteredParentIsRefused() throws {
        let dir = try scratchDirectory()
        try writeFile(dir + "/a.raw", makeContent(size: 1 << 20, seed: 1))
        try writeFile(dir + "/b.raw", makeContent(size: 1 << 20, seed: 2))
        _ = try BackupImageWriter.create(sourcePath: dir + "/a.raw", outputPath: dir + "/base.bli", options: options(seed: "base"))
        var o = options()
        o.parentPath = dir + "/base.bli"
        _ = try BackupImageWriter.create(sourcePath: dir + "/b.raw", outputPath: dir + "/inc.bli", options: o)
        #expect(try BackupImageReader.open(path: dir + "/inc.bli").read(at: 0, count: 1 << 20) == makeContent(size: 1 << 20, seed: 2))

        try FileManager.default.moveItem(atPath: dir + "/base.bli", toPath: dir + "/moved.bli")
        do { _ = try BackupImageReader.open(path: dir + "/inc.bli"); Issue.record("opened without parent") } catch let e as BackupImageError {
            #expect("\(e)".contains("missing"))
        }
        // A different image at the parent's path (same size, other content and ID).
        _ = try BackupImageWriter.create(sourcePath: dir + "/b.raw", outputPath: dir + "/base.bli", options: options(seed: "other"))
        do { _ = try BackupImageReader.open(path: dir + "/inc.bli"); Issue.record("opened with wrong parent") } catch let e as BackupImageError {
            #expect("\(e)".contains("made from"))
        }
        // The original parent, altered in one block: the header digest no longer matches.
        try FileManager.default.removeItem(atPath: dir + "/base.bli")
        try FileManager.default.moveItem(atPath: dir + "/moved.bli", toPath: dir + "/base.bli")
        let (h, _) = try BackupImageReader.readHeader(path: dir + "/base.bli")
        var altered = h
        altered.label = "tampered"
        try RawFile(path: dir + "/base.bli", writable: true).write(at: 0, altered.encode())
        do { _ = try BackupImageReader.open(path: dir + "/inc.bli"); Issue.record("opened with altered parent") } catch let e as BackupImageError {
            #expect("\(e)".contains("damaged"))
        }
        #expect(BackupImageReader.verify(path: dir + "/inc.bli").exitCode == 2)
        // Rewritten under the same image ID from other content: a valid image, but not the parent.
        try FileManager.default.removeItem(atPath: dir + "/base.bli")
        try writeFile(dir + "/a2.raw", makeContent(size: 1 << 20, seed: 3))
        _ = try BackupImageWriter.create(sourcePath: dir + "/a2.raw", outputPath: dir + "/base.bli", options: options(seed: "base"))
        do { _ = try BackupImageReader.open(path: dir + "/inc.bli"); Issue.record("opened with altered parent") } catch let e as BackupImageError {
            #expect("\(e)".contains("altered since"))
        }
        #expect(BackupImageReader.verify(path: dir + "/inc.bli").exitCode == 2)
    }
}

@Suite struct VaultTests {
    @Test(arguments: [false, true])
    func twoBackupsShareBlocks(encrypt: Bool) throws {
        let dir = try scratchDirectory()
        let a = makeContent(size: 3 << 20, seed: 11)
        var b = a
        var rng = TestRNG(12)
        b.replaceSubrange(100_000..<300_000, with: rng.bytes(200_000))
        try writeFile(dir + "/a.raw", a)
        try writeFile(dir + "/b.raw", b)
        var standalone: UInt64 = 0
        for (name, _) in [("a", a), ("b", b)] {
            let s = try BackupImageWriter.create(sourcePath: "\(dir)/\(name).raw", outputPath: "\(dir)/\(name)-solo.bli", options: options(encrypt: encrypt))
            standalone += s.fileSize
        }
        var o = options(encrypt: encrypt)
        o.vaultDirectory = dir + "/vault"
        _ = try BackupImageWriter.create(sourcePath: dir + "/a.raw", outputPath: dir + "/a.bli", options: o)
        let sb = try BackupImageWriter.create(sourcePath: dir + "/b.raw", outputPath: dir + "/b.bli", options: o)
        #expect(sb.newVaultBlocks <= 5 && sb.vaultBlocks > 20)
        let stats = try BackupVault.open(directory: dir + "/vault", passphrase: nil, statisticsOnly: true).statistics()
        let imageFiles = try RawFile(path: dir + "/a.bli").size + RawFile(path: dir + "/b.bli").size
        #expect(stats.storedBytes + imageFiles < standalone * 6 / 10, "vault \(stats.storedBytes) + \(imageFiles) vs \(standalone)")
        #expect(stats.images == 2 && stats.dedupRatio > 1.5)
        for (name, bytes) in [("a", a), ("b", b)] {
            let r = try BackupImageReader.open(path: "\(dir)/\(name).bli", passphrase: testPassphrase)
            #expect(try r.read(at: 0, count: bytes.count) == bytes)
            #expect(BackupImageReader.verify(path: "\(dir)/\(name).bli", passphrase: testPassphrase).isClean)
        }
        let v = try BackupVault.open(directory: dir + "/vault", passphrase: testPassphrase)
        #expect(try v.verify().isEmpty)
        if encrypt {
            // Keyed addresses: a block's file name is not the SHA-256 of its content.
            let firstData = Array(a[0..<65_536])
            #expect(!v.has(SHA256.hash(firstData)))
            #expect(throws: BackupImageError.wrongPassphrase("vault \(dir)/vault")) {
                try BackupVault.open(directory: dir + "/vault", passphrase: .bytes(Array("nope".utf8)))
            }
        }
        // Damage one vault block: verify names it, and reading the image fails on that block.
        let blocksDir = dir + "/vault/blocks"
        let sub = try FileManager.default.contentsOfDirectory(atPath: blocksDir).sorted()[0]
        let file = try FileManager.default.contentsOfDirectory(atPath: "\(blocksDir)/\(sub)").sorted()[0]
        try flipBit("\(blocksDir)/\(sub)/\(file)", at: 40)
        #expect(try v.verify().count == 1)
        // The damaged block may belong to either image (block names are keyed, so which one sorts
        // first varies): whichever images reference it must name it, and at least one does.
        let reports = ["a", "b"].map { BackupImageReader.verify(path: "\(dir)/\($0).bli", passphrase: testPassphrase) }
        let naming = reports.filter { $0.exitCode == 2 && $0.findings.first?.message.contains(file) == true }
        #expect(!naming.isEmpty)
        #expect(reports.allSatisfy { $0.exitCode == 0 || $0.exitCode == 2 })
    }
}
