import BlockCore

/// Disk image formats BootLab reads. Detected by content (magic), never by file name.
public enum DiskImageFormat: String, Sendable, CaseIterable, Codable {
    case raw
    case vhdx
    /// BootLab's backup image (.bli), opened by the BackupImage module.
    case backupImage = "bli"
}

/// Why an image could not be opened as asked.
public enum DiskImageError: Error, CustomStringConvertible, Equatable, Sendable {
    case notWired(DiskImageFormat, path: String)

    public var description: String {
        switch self {
        case let .notWired(format, path):
            return "\(path): \(format.rawValue.uppercased()) input not yet wired into this build (detected by content; reading it needs the \(format.rawValue) reader)"
        }
    }
}

/// The backup image's magic (BackupImage's `BackupHeader.magic`; a test keeps them equal).
public let backupImageMagic: [UInt8] = Array("BLIMAGE".utf8) + [0x1A]

/// Number of leading bytes `detectFormat` looks at.
public let diskImageDetectionLength = 512

/// The format of an image whose first bytes are `firstBytes` (fewer than
/// `diskImageDetectionLength` is fine for short files). Anything unrecognized is raw.
public func detectFormat(firstBytes: [UInt8]) -> DiskImageFormat {
    // MS-VHDX 2.2.1: the file type identifier starts with the 8 bytes "vhdxfile".
    if firstBytes.count >= 8 && Array(firstBytes[0..<8]) == VHDX.fileSignature { return .vhdx }
    // docs/formats/backup-image.md: a backup image starts with "BLIMAGE" 0x1A.
    if firstBytes.count >= 8 && Array(firstBytes[0..<8]) == backupImageMagic { return .backupImage }
    return .raw
}

/// Detects the format of the file at `path` from its first bytes.
public func detectFormat(path: String) throws -> DiskImageFormat {
    let file = try RawFile(path: path)
    let n = Int(min(file.size, UInt64(diskImageDetectionLength)))
    return detectFormat(firstBytes: try file.read(at: 0, count: n))
}

/// Opens an image as a block source of its virtual disk. `format` overrides detection
/// (qemu-img's `-f`); otherwise the content decides. The file is opened read-only.
public func openDiskImage(path: String, format: DiskImageFormat? = nil) throws -> any BlockSource {
    let file = try RawFile(path: path)
    let fmt: DiskImageFormat
    if let format {
        fmt = format
    } else {
        let n = Int(min(file.size, UInt64(diskImageDetectionLength)))
        fmt = detectFormat(firstBytes: try file.read(at: 0, count: n))
    }
    switch fmt {
    case .raw: return file
    case .vhdx: return try VHDXFile.open(path: path)
    case .backupImage: throw DiskImageError.notWired(fmt, path: path)
    }
}
