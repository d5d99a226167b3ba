import BlockCore
import DiskFormats
import Foundation

/// The EFI System Partition the composition layer adds to a GPT disk when the backup holds no
/// ESP (docs/uefi.md): a FAT32 file system computed by `FAT32Image` from a few files (the boot
/// loader at the UEFI fallback path `\EFI\BOOT\BOOTX64.EFI`, so no NVRAM boot entry is needed).
///
/// Where the bytes live: the files themselves sit beside the plugin in `<plugin>.esp/`, named by
/// their SHA-256 (written once by `expose`); the pointer records the file system's parameters
/// and each file's path, size and digest (`ESPRecord`). Opening the plugin recomputes the same
/// FAT32 bytes from those. Nothing of the ESP is ever written into the backup.
public enum SynthesizedESP {
    /// `content` of the ESP's partition record in a "gpt" composition.
    public static let content = "esp"
    /// UEFI's removable-media / fallback boot path for x86-64 (UEFI 2.10 §3.5.1.1).
    public static let fallbackLoaderPath = "/EFI/BOOT/BOOTX64.EFI"
    public static let partitionName = "EFI system partition"

    /// What `expose` asks for: the files to put in the ESP.
    public struct Request: Sendable, Equatable {
        public var files: [FAT32Image.File]
        /// Bytes; nil: `defaultSize(sectorSize:)`.
        public var size: UInt64?
        public init(files: [FAT32Image.File], size: UInt64? = nil) { self.files = files; self.size = size }
    }

    /// 64 MiB with 512-byte sectors; with 4096-byte sectors FAT32's 65525-cluster floor at one
    /// sector per cluster needs ≥ 257 MiB, and 260 MiB is what Windows uses on 4Kn disks.
    public static func defaultSize(sectorSize: Int) -> UInt64 {
        max(64 << 20, sectorSize >= 4096 ? 260 << 20 : FAT32Image.minimumSize(sectorSize: sectorSize))
    }

    /// The sidecar directory of a plugin (`vm.vhdx` → `vm.vhdx.esp`), as the pointer records it
    /// (relative to the plugin's directory).
    public static func sidecarName(pluginPath: String) -> String {
        (pluginPath.split(separator: "/").last.map(String.init) ?? pluginPath) + ".esp"
    }

    /// Writes the request's files into the plugin's sidecar directory (content-addressed, so an
    /// existing file with the same digest is kept) and returns the record of their digests.
    public static func store(_ request: Request, pluginPath: String) throws -> [ESPRecord.FileRecord] {
        let dir = PluginFile.directory(of: PluginFile.absolutePath(pluginPath)) + "/" + sidecarName(pluginPath: pluginPath)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var out: [ESPRecord.FileRecord] = []
        for f in request.files {
            let digest = SHA256.hash(f.bytes).hex
            let path = dir + "/" + digest
            if (try? Data(contentsOf: URL(fileURLWithPath: path))).map({ SHA256.hash([UInt8]($0)).hex }) != digest {
                let tmp = path + ".tmp"
                try Data(f.bytes).write(to: URL(fileURLWithPath: tmp))
                guard rename(tmp, path) == 0 else { throw IOError("rename", path: tmp, errno: errno) }
            }
            out.append(.init(path: f.path, size: UInt64(f.bytes.count), sha256: digest))
        }
        return out
    }

    /// The ESP's bytes for a record: the sidecar files, checked against their digests, laid out
    /// by the FAT32 writer with the recorded parameters.
    public static func source(_ record: ESPRecord, pluginDirectory: String?) throws -> FAT32Image {
        guard let pluginDirectory else {
            throw FormatError("plugin file", "composition", at: 0, "the ESP's files live beside the plugin, but no plugin directory was given")
        }
        guard !record.directory.isEmpty, !record.directory.contains("/"), record.directory != ".", record.directory != ".." else {
            throw FormatError("plugin file", "composition", at: 0, "ESP sidecar directory '\(record.directory)' is not a plain name")
        }
        var files: [FAT32Image.File] = []
        for f in record.files {
            guard f.sha256.count == 64, f.sha256.allSatisfy(\.isHexDigit) else {
                throw FormatError("plugin file", "ESP file \(f.path)", at: 0, "digest '\(f.sha256)' is not a SHA-256")
            }
            let path = pluginDirectory + "/" + record.directory + "/" + f.sha256
            let raw: RawFile
            do { raw = try RawFile(path: path) } catch {
                throw ESPError.missingFile(path: f.path, sidecar: path, reason: "\(error)")
            }
            guard raw.size == f.size, f.size <= UInt64(record.size) else {
                throw ESPError.changedFile(path: f.path, sidecar: path, reason: "\(raw.size) bytes, recorded \(f.size)")
            }
            let bytes = try raw.read(at: 0, count: Int(f.size))
            guard SHA256.hash(bytes).hex == f.sha256 else {
                throw ESPError.changedFile(path: f.path, sidecar: path, reason: "SHA-256 differs from the recorded \(f.sha256)")
            }
            files.append(.init(path: f.path, bytes: bytes))
        }
        return try FAT32Image(options: record.fatOptions, files: files)
    }

    public enum ESPError: Error, CustomStringConvertible, Equatable, Sendable {
        case missingFile(path: String, sidecar: String, reason: String)
        case changedFile(path: String, sidecar: String, reason: String)
        case notApplicable(String)

        public var description: String {
            switch self {
            case let .missingFile(p, s, why): return "synthesized ESP: \(p) is missing (\(s): \(why)); expose the backup again"
            case let .changedFile(p, s, why): return "synthesized ESP: \(p) changed since expose (\(s): \(why)); expose the backup again"
            case .notApplicable(let why): return "synthesized ESP: \(why)"
            }
        }
    }
}

/// The pointer's record of a synthesized ESP (one GPT partition's `esp`).
public struct ESPRecord: Codable, Sendable, Equatable {
    public struct FileRecord: Codable, Sendable, Equatable {
        public var path: String
        public var size: UInt64
        public var sha256: String
    }

    /// File-system size in bytes (the partition may be larger: the rest reads as zeros).
    public var size: UInt64
    public var sectorSize: Int
    public var volumeID: UInt32
    public var label: String
    public var hiddenSectors: UInt32
    /// The sidecar directory's name, beside the plugin.
    public var directory: String
    public var files: [FileRecord]

    var fatOptions: FAT32Image.Options {
        FAT32Image.Options(size: size, sectorSize: sectorSize, volumeID: volumeID, label: label, hiddenSectors: hiddenSectors)
    }
}
