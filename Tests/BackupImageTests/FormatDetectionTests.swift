import Testing
@testable import BackupImage
@testable import DiskFormats

@Suite struct BackupFormatDetectionTests {
    @Test func detectorKnowsTheBackupMagic() {
        #expect(backupImageMagic == BackupHeader.magic)
        #expect(detectFormat(firstBytes: BackupHeader.magic + [0, 1, 2]) == .backupImage)
        #expect(detectFormat(firstBytes: Array("BLIMAGE".utf8)) == .raw)
    }
}
