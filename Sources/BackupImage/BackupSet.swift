import BlockCore
import DiskFormats
import Foundation

/// A backup of several volumes of one GPT disk (docs/formats/gpt.md, "Several volumes of one
/// disk"): one ordinary `.bli` image per volume, beside a small manifest that names them and
/// says where each sat on the disk. The images are unchanged; the manifest only lists them, so a
/// member can still be restored, verified or exposed alone.
///
/// The manifest is UTF-8 JSON (keys sorted, two-space indentation, a final newline: the same
/// bytes for the same backup), decoded by Foundation and then validated by `validate()`: every
/// field is bounded before it is used, and a bad manifest gets a `BackupSetError` naming the
/// field and the reason.
public struct BackupSetManifest: Codable, Sendable, Equatable {
    /// The `format` value that marks a manifest.
    public static let formatName = "bootlab-volume-set"
    public static let currentVersion = 1
    /// Larger files are refused before they are read (a 128-volume manifest is ≈ 60 KiB).
    public static let maxFileSize = 1 << 20
    /// Bound on the number of volumes (GPT's usual entry count).
    public static let maxVolumes = 128
    /// Bound on a member's file name (bytes).
    public static let maxFileNameLength = 255

    public var format: String
    public var version: Int
    /// The disk the volumes came from: its GUID, logical sector size, size in bytes, and the
    /// shape of its partition entry array.
    public var diskGUID: GUID
    public var sectorSize: Int
    public var diskSize: UInt64
    public var entryCount: Int
    public var entrySize: Int
    /// One per image, in ascending entry number.
    public var volumes: [Volume]

    public struct Volume: Codable, Sendable, Equatable {
        /// The image's file name, in the manifest's directory (no path separator).
        public var file: String
        /// The image's ID and the SHA-256 of its header (hex): a member must still have both.
        public var imageID: GUID
        public var headerDigest: String
        /// The GPT entry: number, type and unique GUIDs, attributes, name, first LBA, and the
        /// partition's length in bytes (= the image's virtual size).
        public var number: Int
        public var typeGUID: GUID
        public var uniqueGUID: GUID
        public var attributes: UInt64
        public var name: String
        public var firstLBA: UInt64
        public var size: UInt64

        public init(file: String, imageID: GUID, headerDigest: String, number: Int, typeGUID: GUID, uniqueGUID: GUID,
                    attributes: UInt64, name: String, firstLBA: UInt64, size: UInt64) {
            self.file = file
            self.imageID = imageID
            self.headerDigest = headerDigest
            self.number = number
            self.typeGUID = typeGUID
            self.uniqueGUID = uniqueGUID
            self.attributes = attributes
            self.name = name
            self.firstLBA = firstLBA
            self.size = size
        }

        /// Sectors the partition spans.
        public func sectors(_ sectorSize: Int) -> UInt64 {
            let ss = UInt64(max(1, sectorSize))
            return size / ss + (size % ss == 0 ? 0 : 1)
        }
    }

    public init(diskGUID: GUID, sectorSize: Int, diskSize: UInt64, entryCount: Int, entrySize: Int, volumes: [Volume]) {
        format = Self.formatName
        version = Self.currentVersion
        self.diskGUID = diskGUID
        self.sectorSize = sectorSize
        self.diskSize = diskSize
        self.entryCount = entryCount
        self.entrySize = entrySize
        self.volumes = volumes
    }

    /// The manifest's bytes: sorted keys, pretty-printed, final newline (deterministic).
    public func encode() throws -> [UInt8] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return Array(try enc.encode(self)) + [0x0A]
    }

    /// Decodes and validates a manifest's bytes.
    public static func decode(_ bytes: [UInt8]) throws -> BackupSetManifest {
        guard bytes.count <= maxFileSize else {
            throw BackupSetError(field: "manifest", reason: "\(bytes.count) bytes exceed \(maxFileSize)")
        }
        // The format and version first, alone: a later version may change anything else.
        struct Probe: Decodable {
            var format: String?
            var version: Int?
        }
        let probe: Probe
        do { probe = try JSONDecoder().decode(Probe.self, from: Data(bytes)) } catch {
            throw BackupSetError(field: "manifest", reason: "not a JSON object: \(Self.describe(error))")
        }
        guard probe.format == formatName else {
            throw BackupSetError(field: "format", reason: "expected \"\(formatName)\", found \(probe.format.map { "\"\($0)\"" } ?? "none")")
        }
        guard probe.version == currentVersion else {
            throw BackupSetError(field: "version", reason: "\(probe.version.map(String.init) ?? "none") is not a version this bootlab reads (\(currentVersion))")
        }
        let m: BackupSetManifest
        do { m = try JSONDecoder().decode(BackupSetManifest.self, from: Data(bytes)) } catch {
            throw BackupSetError(field: Self.field(of: error), reason: Self.describe(error))
        }
        try m.validate()
        return m
    }

    /// Whether the file at `path` looks like a manifest (its first non-blank byte is `{`); the
    /// caller then decodes it, which says what is wrong with it if anything.
    public static func looksLikeManifest(path: String) -> Bool {
        guard let f = try? RawFile(path: path), f.size > 0, let head = try? f.read(at: 0, count: Int(min(f.size, 64))) else { return false }
        return head.first { ![0x20, 0x09, 0x0A, 0x0D].contains($0) } == UInt8(ascii: "{")
    }

    /// Reads and validates the manifest at `path` (its size bounded before reading).
    public static func read(path: String) throws -> BackupSetManifest {
        let f = try RawFile(path: path)
        guard f.size <= UInt64(maxFileSize) else {
            throw BackupSetError(field: "manifest", reason: "\(path) has \(f.size) bytes, more than \(maxFileSize)")
        }
        return try decode(try f.read(at: 0, count: Int(f.size)))
    }

    /// The rules a manifest must keep (each names its field): the disk's shape within GPT's
    /// bounds (docs/formats/gpt.md), 1…`maxVolumes` volumes with plain, distinct file names,
    /// distinct image IDs and entry numbers, each inside the disk's usable range, none
    /// overlapping another.
    public func validate() throws {
        guard GPT.isSupportedSectorSize(sectorSize) else {
            throw BackupSetError(field: "sectorSize", reason: "\(sectorSize) is not a power of two from 512 to 4096")
        }
        let ss = UInt64(sectorSize)
        guard entrySize >= 128, entrySize <= 4096, entrySize.nonzeroBitCount == 1 else {
            throw BackupSetError(field: "entrySize", reason: "\(entrySize) is not 128 × 2^n up to 4096")
        }
        guard entryCount >= 1, entryCount * entrySize <= 4 << 20 else {
            throw BackupSetError(field: "entryCount", reason: "\(entryCount) entries of \(entrySize) bytes: expected 1 … \((4 << 20) / entrySize)")
        }
        guard diskSize % ss == 0, diskSize <= (UInt64(1) << 60) else {
            throw BackupSetError(field: "diskSize", reason: "\(diskSize) is not a multiple of \(ss) up to 2^60")
        }
        let arraySectors = (UInt64(entryCount * entrySize) + ss - 1) / ss
        let firstUsable = 2 + arraySectors
        let sectors = diskSize / ss
        guard sectors > 2 * arraySectors + 3 else {
            throw BackupSetError(field: "diskSize", reason: "\(diskSize) bytes cannot hold a GPT with \(entryCount) entries")
        }
        let lastUsable = sectors - 2 - arraySectors
        guard !volumes.isEmpty, volumes.count <= Self.maxVolumes, volumes.count <= entryCount else {
            throw BackupSetError(field: "volumes", reason: "\(volumes.count) volumes: expected 1 … \(min(Self.maxVolumes, entryCount))")
        }
        var files = Set<String>(), ids = Set<GUID>(), numbers = Set<Int>()
        var ranges: [(range: ClosedRange<UInt64>, index: Int)] = []
        for (i, v) in volumes.enumerated() {
            let at = "volumes[\(i)]"
            guard Self.isPlainFileName(v.file) else {
                throw BackupSetError(field: "\(at).file", reason: "\"\(v.file.prefix(80))\" is not a plain file name (1…\(Self.maxFileNameLength) bytes, no '/', NUL, '.' or '..')")
            }
            guard files.insert(v.file).inserted else { throw BackupSetError(field: "\(at).file", reason: "\(v.file) is named twice") }
            guard ids.insert(v.imageID).inserted else { throw BackupSetError(field: "\(at).imageID", reason: "\(v.imageID) is named twice") }
            guard v.headerDigest.utf8.count == 64, [UInt8](hex: v.headerDigest) != nil else {
                throw BackupSetError(field: "\(at).headerDigest", reason: "not 64 hex digits")
            }
            guard v.number >= 1, v.number <= entryCount else {
                throw BackupSetError(field: "\(at).number", reason: "\(v.number) is outside 1 … \(entryCount)")
            }
            guard numbers.insert(v.number).inserted else { throw BackupSetError(field: "\(at).number", reason: "entry \(v.number) is used twice") }
            guard !v.typeGUID.isZero else { throw BackupSetError(field: "\(at).typeGUID", reason: "zero (an unused entry)") }
            guard v.name.utf16.count <= 36 else {
                throw BackupSetError(field: "\(at).name", reason: "\(v.name.utf16.count) UTF-16 units exceed GPT's 36")
            }
            guard v.size > 0 else { throw BackupSetError(field: "\(at).size", reason: "an empty volume") }
            guard v.firstLBA >= firstUsable, v.firstLBA <= lastUsable, v.sectors(sectorSize) <= lastUsable - v.firstLBA + 1 else {
                throw BackupSetError(field: "\(at).firstLBA", reason: "LBA \(v.firstLBA) + \(v.sectors(sectorSize)) sectors is outside the usable range \(firstUsable) … \(lastUsable)")
            }
            let r = v.firstLBA...(v.firstLBA + v.sectors(sectorSize) - 1)
            if let other = ranges.first(where: { $0.range.overlaps(r) }) {
                throw BackupSetError(field: "\(at).firstLBA", reason: "LBA \(r.lowerBound) … \(r.upperBound) overlaps volumes[\(other.index)] (LBA \(other.range.lowerBound) … \(other.range.upperBound))")
            }
            ranges.append((r, i))
        }
    }

    static func isPlainFileName(_ s: String) -> Bool {
        let n = s.utf8.count
        return n >= 1 && n <= maxFileNameLength && s != "." && s != ".." && !s.utf8.contains(0x2F) && !s.utf8.contains(0)
    }

    static func field(of error: Error) -> String {
        let path: [CodingKey]
        switch error as? DecodingError {
        case .typeMismatch(_, let c)?, .valueNotFound(_, let c)?, .dataCorrupted(let c)?: path = c.codingPath
        case .keyNotFound(let k, let c)?: path = c.codingPath + [k]
        default: path = []
        }
        guard !path.isEmpty else { return "manifest" }
        return path.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingCharacters(in: CharacterSet(charactersIn: "."))
    }

    static func describe(_ error: Error) -> String {
        switch error as? DecodingError {
        case .typeMismatch(let t, _)?: return "expected \(t)"
        case .valueNotFound(let t, _)?: return "missing \(t)"
        case .keyNotFound(let k, _)?: return "missing key \(k.stringValue)"
        case .dataCorrupted(let c)?: return c.debugDescription
        default: return "\(error)"
        }
    }
}

/// A manifest that is not one this bootlab accepts: which field, and why.
public struct BackupSetError: Error, CustomStringConvertible, Equatable, Sendable {
    public var field: String
    public var reason: String
    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }
    public var description: String { "volume set manifest: \(field): \(reason)" }
}

/// Writes a volume set: `backup create DISK SET --partition 1 --partition 2`.
public enum BackupSetWriter {
    /// What was written.
    public struct Summary: Sendable, Codable {
        public var manifest: String
        public var volumes: [BackupCreateSummary]
    }

    /// The file name of partition `number`'s image for a manifest named `manifestPath`:
    /// `<name without extension>.p<number>.bli`, in the manifest's directory.
    public static func memberFileName(manifestPath: String, number: Int) -> String {
        let base = (manifestPath as NSString).lastPathComponent
        let stem = (base as NSString).deletingPathExtension
        return "\(stem.isEmpty ? base : stem).p\(number).bli"
    }

    /// Backs up `partitions` of the GPT disk at `sourcePath` as one image each, then writes the
    /// manifest at `manifestPath` (last, so a half-written set has no manifest). Each image is
    /// what `backup create --partition N` writes, with `options`; a fixed image ID (`--image-id`,
    /// `--seed`) becomes one ID per member, derived from it and the entry number.
    public static func create(sourcePath: String, manifestPath: String, partitions: [Int], options: BackupCreateOptions) throws -> Summary {
        let numbers = partitions.sorted()
        guard numbers.count >= 2 else { throw BackupImageError.invalidArgument("a volume set needs at least two partitions") }
        guard Set(numbers).count == numbers.count else { throw BackupImageError.invalidArgument("a partition is named twice") }
        guard numbers.count <= BackupSetManifest.maxVolumes else {
            throw BackupImageError.invalidArgument("at most \(BackupSetManifest.maxVolumes) partitions in one set")
        }
        guard options.parentPath == nil else {
            throw BackupImageError.invalidArgument("--parent with several partitions (an incremental volume set) is not implemented")
        }
        guard !FileManager.default.fileExists(atPath: manifestPath) else { throw BackupImageError.outputExists(manifestPath) }
        let disk = try RawFile(path: sourcePath)
        let table = try PartitionTable.read(from: disk)
        guard let gpt = table.gpt else {
            throw BackupImageError.invalidArgument("a volume set needs a GPT disk; \(sourcePath) has an \(table.scheme.rawValue.uppercased()) table")
        }
        let directory = (manifestPath as NSString).deletingLastPathComponent
        var volumes: [BackupSetManifest.Volume] = []
        var summaries: [BackupCreateSummary] = []
        for n in numbers {
            guard gpt.partition(number: n) != nil else {
                throw BackupImageError.invalidArgument("partition \(n) not found in the GPT (have: \(gpt.partitions.map { String($0.number) }.joined(separator: ", ")))")
            }
            var o = options
            o.partition = n
            o.sourceKind = .volume
            if let id = options.imageID { o.imageID = GUID.derived(seed: id.bytes, label: "bootlab volume set member \(n)") }
            let file = memberFileName(manifestPath: manifestPath, number: n)
            let path = directory.isEmpty ? file : directory + "/" + file
            let s = try BackupImageWriter.create(source: disk, outputPath: path, options: o)
            let (h, digest) = try BackupImageReader.readHeader(path: path)
            volumes.append(.init(file: file, imageID: h.imageID, headerDigest: digest.hex, number: Int(h.partitionNumber),
                                 typeGUID: h.gptPartitionType, uniqueGUID: h.gptPartitionGUID, attributes: h.gptAttributes,
                                 name: h.gptPartitionName, firstLBA: h.partitionStartLBA, size: h.virtualSize))
            summaries.append(s)
        }
        let manifest = BackupSetManifest(diskGUID: gpt.diskGUID, sectorSize: gpt.sectorSize, diskSize: disk.size,
                                         entryCount: gpt.entryCount, entrySize: gpt.entrySize, volumes: volumes)
        try manifest.validate()
        let bytes = try manifest.encode()
        // O_EXCL: a manifest never replaces another.
        let fd = open(manifestPath, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard fd >= 0 else { throw BackupImageError.outputExists(manifestPath) }
        defer { close(fd) }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(fd) == 0 else {
            throw BackupImageError.invalidArgument("writing \(manifestPath) failed: \(String(cString: strerror(errno)))")
        }
        return Summary(manifest: manifestPath, volumes: summaries)
    }
}
