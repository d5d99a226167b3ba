import BlockCore

/// The result of verifying an image and its chain (what `backup verify` and `check` print).
public struct BackupVerifyReport: Sendable, Codable, Hashable {
    public var path: String
    public var imagesChecked: Int
    public var blocksChecked: Int
    public var findings: [BackupFinding]

    public var isClean: Bool { findings.isEmpty }
    /// `check`-style exit status: 0 clean, 2 corrupt, 1 could not check.
    public var exitCode: Int32 {
        if findings.isEmpty { return 0 }
        return findings.contains { $0.severity == .corrupt } ? 2 : 1
    }
}

extension BackupImageReader {
    /// Opens `path` and decodes every stored block of every image in its chain, checking the
    /// CRC-32C, the GCM tag and the plaintext digest. Never throws: an image that cannot be
    /// opened becomes a finding (corrupt for structural damage, could-not-check otherwise).
    public static func verify(path: String, passphrase: PassphraseSource? = nil, vault: String? = nil,
                              progress: Bool = false) -> BackupVerifyReport {
        var report = BackupVerifyReport(path: path, imagesChecked: 0, blocksChecked: 0, findings: [])
        let reader: BackupImageReader
        do {
            var o = Options()
            o.readAheadBlocks = 0
            reader = try open(path: path, passphrase: passphrase, vault: vault, options: o)
        } catch let e as FormatError {
            report.findings.append(BackupFinding(severity: .corrupt, fileOffset: e.offset, message: e.description))
            return report
        } catch let e as BackupImageError {
            let severity: BackupFinding.Severity = e.isCorruption ? .corrupt : .couldNotCheck
            report.findings.append(BackupFinding(severity: severity, message: e.description))
            return report
        } catch {
            report.findings.append(BackupFinding(severity: .couldNotCheck, message: "\(error)"))
            return report
        }
        report.findings = reader.verifyBlocks(progress: progress, checked: &report.blocksChecked, images: &report.imagesChecked)
        return report
    }

    /// Decodes every block this chain stores, fully checked. Findings name block and offsets.
    public func verifyBlocks(progress: Bool = false) -> [BackupFinding] {
        var n = 0, m = 0
        return verifyBlocks(progress: progress, checked: &n, images: &m)
    }

    func verifyBlocks(progress: Bool, checked: inout Int, images: inout Int) -> [BackupFinding] {
        var findings: [BackupFinding] = []
        let all = chain
        let total = all.reduce(UInt64(0)) { $0 + $1.header.virtualSize }
        let bar = ProgressBar(total: total, label: "verify", enabled: progress)
        for r in all {
            images += 1
            for i in 0..<r.blockCount {
                let k = r.kind(i)
                if k == .local || k == .vault {
                    checked += 1
                    do { _ = try r.decodeOwnBlock(i, fullCheck: true) } catch let e as FormatError {
                        findings.append(BackupFinding(severity: .corrupt, block: i, virtualOffset: UInt64(i) * UInt64(r.blockSize),
                                                      fileOffset: e.offset, message: e.description))
                    } catch {
                        findings.append(BackupFinding(severity: .couldNotCheck, block: i, virtualOffset: UInt64(i) * UInt64(r.blockSize),
                                                      message: "\(error)"))
                    }
                }
                bar.advance(by: UInt64(r.plainLength(ofBlock: i)))
            }
        }
        bar.finish()
        return findings
    }
}

/// The facts `backup info` prints (and `bootlab info` may embed).
public struct BackupImageInfo: Sendable, Codable, Hashable {
    public var format = "bootlab-backup-image"
    public var version: String
    public var imageID: String
    public var headerDigest: String
    public var parentID: String?
    public var parentPath: String?
    public var vaultID: String?
    public var vaultPath: String?
    public var virtualSize: UInt64
    public var blockSize: UInt32
    public var blockCount: UInt32
    public var compression: String
    public var compressionLevel: Int
    public var encrypted: Bool
    public var scrypt: ScryptParameters?
    public var sourceKind: String
    public var partitionScheme: String
    public var partitionNumber: UInt32?
    public var logicalSectorSize: UInt32
    public var mbrDiskSignature: String?
    public var gptDiskGUID: String?
    public var gptPartitionType: String?
    public var gptPartitionGUID: String?
    /// GPT entry fields (header 1.1); nil when not recorded.
    public var gptAttributes: String?
    public var gptPartitionName: String?
    public var gptEntryCount: UInt32?
    public var mbrPartitionType: String?
    public var bootable: Bool
    public var partitionStartLBA: UInt64
    public var partitionSizeBytes: UInt64
    public var originalDiskSize: UInt64
    public var fileSystemHint: String
    public var label: String
    public var creationTime: UInt64?
    public var fileSize: UInt64?

    public init(header h: BackupHeader, digest: [UInt8], fileSize: UInt64? = nil) {
        version = "\(BackupHeader.majorVersion).\(h.minorVersion)"
        imageID = h.imageID.description
        headerDigest = digest.hex
        parentID = h.hasParent ? h.parentID.description : nil
        parentPath = h.hasParent ? h.parentPath : nil
        vaultID = h.usesVault ? h.vaultID.description : nil
        vaultPath = h.usesVault ? h.vaultPath : nil
        virtualSize = h.virtualSize
        blockSize = h.blockSize
        blockCount = h.blockCount
        compression = h.compression == .zstd ? "zstd" : "none"
        compressionLevel = Int(h.compressionLevel)
        encrypted = h.isEncrypted
        scrypt = h.scrypt
        sourceKind = h.sourceKind.name
        partitionScheme = h.partitionScheme.name
        partitionNumber = h.partitionNumber == 0 ? nil : h.partitionNumber
        logicalSectorSize = h.logicalSectorSize
        mbrDiskSignature = h.partitionScheme == .mbr ? String(format8: h.mbrDiskSignature) : nil
        gptDiskGUID = h.partitionScheme == .gpt ? h.gptDiskGUID.description : nil
        gptPartitionType = h.gptPartitionType.isZero ? nil : h.gptPartitionType.description
        gptPartitionGUID = h.gptPartitionGUID.isZero ? nil : h.gptPartitionGUID.description
        gptAttributes = h.partitionScheme == .gpt && h.hasGPTEntryFields ? "0x" + String(h.gptAttributes, radix: 16) : nil
        gptPartitionName = h.gptPartitionName.isEmpty ? nil : h.gptPartitionName
        gptEntryCount = h.gptEntryCount == 0 ? nil : h.gptEntryCount
        mbrPartitionType = h.partitionScheme == .mbr && h.partitionNumber != 0 ? "0x" + String(h.mbrPartitionType, radix: 16) : nil
        bootable = h.bootable
        partitionStartLBA = h.partitionStartLBA
        partitionSizeBytes = h.partitionSizeBytes
        originalDiskSize = h.originalDiskSize
        fileSystemHint = h.fileSystemHint
        label = h.label
        creationTime = h.flags.contains(.hasCreationTime) ? h.creationTime : nil
        self.fileSize = fileSize
    }
}

extension String {
    init(format8 v: UInt32) {
        let digits = String(v, radix: 16)
        self = "0x" + String(repeating: "0", count: Swift.max(0, 8 - digits.count)) + digits
    }
}
