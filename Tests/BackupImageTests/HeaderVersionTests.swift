import Foundation
import Testing
import BlockCore
@testable import BackupImage

/// Header minor version 1 (docs/formats/backup-image.md §2.4): the GPT entry fields round-trip;
/// a header without them is written as 1.0, byte for byte what the 1.0 writer wrote (so images
/// of MBR disks and bare volumes, and every digest naming them, did not change); 1.0 images
/// committed before 1.1 existed still read; bad entry shapes get typed errors.
@Suite struct HeaderVersionTests {
    static var corpus: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("FuzzCorpus/BackupImage").path
    }

    @Test func gptFieldsRoundTripAsVersion1_1() throws {
        var h = try BackupHeader.parse(try readFile(Self.corpus + "/part.bli"))
        #expect(h.minorVersion == 0 && !h.hasGPTEntryFields)
        let before = h.encode()
        #expect(Array(before[2560..<4096]).allSatisfy { $0 == 0 } && before.le16(10) == 0)
        h.partitionScheme = .gpt
        h.gptAttributes = 0x1000_0000_0000_0004
        h.gptPartitionName = "Linux root ✓"
        h.gptEntryCount = 128
        h.gptEntrySize = 128
        let b = h.encode()
        #expect(b.le16(10) == 1 && b.le64(2560) == 0x1000_0000_0000_0004 && b.le32(2640) == 128)
        let back = try BackupHeader.parse(b)
        #expect(back == h && back.minorVersion == 1)
        #expect(BackupImageInfo(header: back, digest: []).version == "1.1")
        #expect(BackupImageInfo(header: back, digest: []).gptPartitionName == "Linux root ✓")
    }

    /// Images written before 1.1 (committed corpus files) read as 1.0 with nothing recorded, and
    /// re-encode to their exact header bytes.
    @Test(arguments: ["plain.bli", "part.bli", "inc.bli", "enc.bli", "none.bli"])
    func oneZeroImagesStillRead(name: String) throws {
        let bytes = try readFile(Self.corpus + "/" + name)
        let h = try BackupHeader.parse(bytes)
        #expect(h.minorVersion == 0 && h.gptEntryCount == 0 && h.gptPartitionName.isEmpty)
        #expect(h.encode() == Array(bytes[0..<BackupHeader.size]), "\(name): re-encoding changed the header")
    }

    @Test(arguments: [(UInt32(128), UInt32(0)), (192, 4), (8192, 4), (128, 40_000), (0, 1)])
    func badEntryShapeIsTyped(size: UInt32, count: UInt32) throws {
        var h = try BackupHeader.parse(try readFile(Self.corpus + "/part.bli"))
        h.gptEntrySize = size
        h.gptEntryCount = count
        #expect { try BackupHeader.parse(h.encode()) } throws: { e in
            guard let f = e as? FormatError else { return false }
            return f.structure == "header" && (f.offset == 2640 || f.offset == 2644)
        }
    }
}
