import BlockCore

/// A disk image format BootLab reads, by name: `raw`, BootLab's backup image (`bli`), or one of
/// the native formats registered in `DiskFormatRegistry` (`vhdx`, …). Detected by content
/// (magic), never by file name.
public struct DiskImageFormat: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: String

    /// Any known name: raw, bli or a registered driver's name.
    public init?(rawValue: String) {
        let name = rawValue.lowercased()
        guard name == "raw" || name == "bli" || DiskFormatRegistry.driver(named: name) != nil else { return nil }
        self.rawValue = name
    }

    private init(known: String) { rawValue = known }

    public static let raw = DiskImageFormat(known: "raw")
    public static let vhdx = DiskImageFormat(known: "vhdx")
    /// BootLab's backup image (.bli), opened by the BackupImage module.
    public static let backupImage = DiskImageFormat(known: "bli")

    /// The native format's driver; nil for raw and backup images.
    public var driver: (any DiskFormatDriver)? { DiskFormatRegistry.driver(named: rawValue) }
    public var description: String { rawValue }
    /// Every name `-f`/`-O` accept.
    public static var allNames: [String] { ["raw"] + DiskFormatRegistry.names + ["bli"] }
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
public let diskImageDetectionLength = DiskFormatRegistry.probeLength

/// The format of an image whose first bytes are `firstBytes` and last 512 bytes `lastBytes`
/// (fewer is fine for short files; a fixed VHD is known only by its footer). Anything
/// unrecognized is raw.
public func detectFormat(firstBytes: [UInt8], lastBytes: [UInt8] = []) -> DiskImageFormat {
    // docs/formats/backup-image.md: a backup image starts with "BLIMAGE" 0x1A.
    if firstBytes.count >= 8 && Array(firstBytes[0..<8]) == backupImageMagic { return .backupImage }
    if let d = DiskFormatRegistry.drivers.first(where: { $0.matches(head: firstBytes, tail: lastBytes) }) {
        return DiskImageFormat(rawValue: d.name)!
    }
    return .raw
}

/// Detects the format of the file at `path` from its first and last bytes.
public func detectFormat(path: String) throws -> DiskImageFormat {
    let file = try RawFile(path: path)
    let head = try file.read(at: 0, count: Int(min(file.size, UInt64(diskImageDetectionLength))))
    let t = min(file.size, 512)
    return detectFormat(firstBytes: head, lastBytes: try file.read(at: file.size - t, count: Int(t)))
}

/// Opens an image as a block source of its virtual disk. `format` overrides detection
/// (qemu-img's `-f`); otherwise the content decides. The file is opened read-only.
public func openDiskImage(path: String, format: DiskImageFormat? = nil) throws -> any BlockSource {
    let fmt = try format ?? detectFormat(path: path)
    if fmt == .raw { return try RawFile(path: path) }
    guard let driver = fmt.driver else { throw DiskImageError.notWired(fmt, path: path) }
    return try driver.open(path: path)
}
