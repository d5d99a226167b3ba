import BlockCore

/// Options every native format's writer understands, parsed once from the CLI's `-o key=value`
/// list (qemu-img style) and from a target's profile. A format reads the keys it knows and
/// rejects the rest through `unknownKeys(allowed:)`, so a typo is an error, never ignored.
public struct NativeFormatOptions: Sendable, Equatable {
    /// The format's variant: VMDK `monolithicSparse` | `streamOptimized`, VHD `dynamic` | `fixed`.
    public var subformat: String?
    /// 512 or 4096 where the format allows it.
    public var logicalSectorSize: UInt32 = 512
    /// The payload unit (VHDX block, VMDK grain, qcow2 cluster, VDI block); nil = format default.
    public var allocationUnit: UInt64?
    /// 16 bytes from which every identifier the format needs (GUIDs, UUIDs, CIDs) derives:
    /// same seed and same extents → same file.
    public var seed: [UInt8] = Array(repeating: 0, count: 16)
    /// Every `-o key=value` given, for format-specific keys (e.g. VMDK `adapter_type`).
    public var keys: [String: String] = [:]
    /// The name the file will have (no directory), for formats whose structures name the file
    /// itself (a monolithic VMDK's extent line); nil when unknown.
    public var fileName: String?

    public init(subformat: String? = nil, logicalSectorSize: UInt32 = 512, allocationUnit: UInt64? = nil,
                seed: [UInt8] = Array(repeating: 0, count: 16), keys: [String: String] = [:]) {
        self.subformat = subformat
        self.logicalSectorSize = logicalSectorSize
        self.allocationUnit = allocationUnit
        self.seed = seed
        self.keys = keys
    }

    /// Keys the CLI maps onto the typed fields above; every format accepts them.
    public static let commonKeys: Set<String> = ["subformat", "logical_sector_size", "block_size", "cluster_size", "grain_size", "seed"]

    /// `-o` keys not in `commonKeys ∪ allowed`, sorted, for a clear "unknown option" error.
    public func unknownKeys(allowed: Set<String>) -> [String] {
        keys.keys.filter { !Self.commonKeys.contains($0) && !allowed.contains($0) }.sorted()
    }
}

/// Why a format refused options or an operation, before touching any file.
public struct NativeFormatOptionError: Error, CustomStringConvertible, Equatable, Sendable {
    public let format: String
    public let reason: String
    public init(format: String, reason: String) { self.format = format; self.reason = reason }
    public var description: String { "\(format): \(reason)" }
}

/// One disk format, everything the CLI, the front-ends and the lab need from it, behind one small
/// interface (the nbdkit-plugin spirit: each format is one value that does one thing per call).
///
/// A format lives in its own folder of `DiskFormats` (`VHDX/`, `VMDK/`, `VHD/`, `QCOW2/`, `VDI/`)
/// and registers one driver in `DiskFormatRegistry.drivers`. Nothing above DiskFormats switches
/// on a format's name.
public protocol DiskFormatDriver: Sendable {
    /// The name used by `-f`/`-O`, targets' `native_format`, `info` and goldens ("vmdk").
    var name: String { get }
    /// Subformats `-o subformat=` accepts; the first is the default (the exposed/plugin form).
    var subformats: [String] { get }
    /// Detection by content. `head` is the file's first `DiskFormatRegistry.probeLength` bytes
    /// (fewer for short files), `tail` its last 512 bytes (a fixed VHD has only a footer).
    func matches(head: [UInt8], tail: [UInt8]) -> Bool
    /// The virtual disk inside the file at `path`, read-only. Typed errors naming structure,
    /// offset and reason; no allocation sized by an untrusted field.
    func open(path: String) throws -> any BlockSource
    /// `bootlab check`: findings (exit 0 clean / 2 corrupt); throws when the file cannot be
    /// checked at all (exit 1).
    func check(path: String) throws -> CheckReport
    /// `bootlab info`.
    func info(path: String) throws -> ImageInfo
    /// The format's bytes computed on demand from `source`: the exposed form (what plugin files,
    /// front-ends and replacement files use). Deterministic.
    func view(of source: any BlockSource, options: NativeFormatOptions) throws -> any NativeFormatView
    /// `bootlab convert -O name`: writes `source` as a new file. The default copies `view(of:)`
    /// with `SparseImageWriter`, the format signature written last; subformats that are not
    /// views (VMDK streamOptimized: compressed grains) override it.
    func convert(_ source: any BlockSource, toPath path: String, options: NativeFormatOptions,
                 writer: SparseImageWriter.Options) throws -> SparseImageWriter.Stats
    /// `bootlab create -f name FILE SIZE`: an empty disk of `virtualSize` bytes.
    func create(path: String, virtualSize: UInt64, options: NativeFormatOptions) throws
    /// Bytes at the start of the file that identify the format, written last by `convert`
    /// (`SparseImageWriter.Options.deferredPrefix`), so a half-written file is never taken for
    /// a complete one. 0 when the signature is not at the start (fixed VHD: the footer is last).
    var signatureLength: Int { get }

    // Plugin files (docs/formats/plugin-file.md): the exposed form with BootLab's pointer — an
    // opaque blob of at most `PluginPointerPlacement.maxBlobLength` bytes — kept where the format
    // has room for it (`NativeFormatView.pointerPlacement`), in a reserved area of fixed size, so
    // the layout never depends on the blob.

    /// `view(of:options:)` with `pointer` embedded.
    func pluginView(of source: any BlockSource, options: NativeFormatOptions, pointer: [UInt8]) throws -> any NativeFormatView
    /// The pointer blob the file at `path` carries, or nil when it carries none (not a plugin).
    /// Throws only when the file is not of this format at all.
    func readPluginPointer(path: String) throws -> [UInt8]?

    /// One byte inside each structure the format synthesizes, by name ("header", "BAT entry",
    /// "grain table entry", "L2 entry", "footer checksum", "block map entry"…), found by parsing
    /// the file at `path` (its skeleton and trailer only: works on a plugin file without its
    /// backup). The lab flips these bytes (`structure-byte:NAME`) to prove that a validator
    /// notices each structure going wrong; a mutation catalog lists them all.
    func structureSites(path: String) throws -> [String: UInt64]

    // Materialized files (docs/replacement-file.md): a plugin's replacement, or `convert` of a
    // plugin to its own format, is the plugin's bytes with the payload filled in. Two things in
    // it are the format's business, so they sit behind this seam rather than a switch on names.

    /// The edits that retire the plugin pointer of the plugin file at `path` in a copy of its
    /// bytes, so that BootLab no longer takes the copy for a plugin: `retire` maps the pointer
    /// blob to the blob the copy must carry (same length); the format says where the blob
    /// lives (inline, base64 in a descriptor, or a sidecar whose tag is dropped) and keeps any
    /// checksum that covers it valid. Empty when the file carries no pointer.
    func pointerRetirementEdits(path: String, retire: ([UInt8]) throws -> [UInt8]) throws -> [ByteEdit]
    /// Byte ranges of a file of `fileSize` bytes that identify the format, written last when a
    /// file is filled in place over time (a replacement file): until they are written, no reader
    /// (qemu-img's probe, BootLab's detection) takes the half-filled file for this format.
    func deferredRanges(fileSize: UInt64) -> [Range<UInt64>]
    /// Files beside a plugin `P` that belong to it (`P` + suffix: a fixed VHD's sidecar
    /// pointer); they follow the plugin when finalize renames it.
    var pluginCompanionSuffixes: [String] { get }
}

/// One edit of a file's bytes: at `offset`, `old` (what a plugin file holds there, checked
/// before editing a copy) becomes `new` (same length).
public struct ByteEdit: Sendable, Equatable {
    public var offset: UInt64
    public var old: [UInt8]
    public var new: [UInt8]
    public init(offset: UInt64, old: [UInt8], new: [UInt8]) {
        precondition(old.count == new.count, "ByteEdit: old and new must have the same length")
        self.offset = offset
        self.old = old
        self.new = new
    }
}

extension DiskFormatDriver {
    public func convert(_ source: any BlockSource, toPath path: String, options: NativeFormatOptions,
                        writer: SparseImageWriter.Options) throws -> SparseImageWriter.Stats {
        var w = writer
        w.deferredPrefix = signatureLength
        return try SparseImageWriter.write(try view(of: source, options: options), toPath: path, options: w)
    }

    public func pluginView(of source: any BlockSource, options: NativeFormatOptions, pointer: [UInt8]) throws -> any NativeFormatView {
        throw NativeFormatOptionError(format: name, reason: "plugin files are not supported for this format yet")
    }

    public func readPluginPointer(path: String) throws -> [UInt8]? { nil }

    public func structureSites(path: String) throws -> [String: UInt64] { [:] }

    public var pluginCompanionSuffixes: [String] { [] }

    /// The signature at the start of the file.
    public func deferredRanges(fileSize: UInt64) -> [Range<UInt64>] {
        signatureLength > 0 ? [0..<min(UInt64(signatureLength), fileSize)] : []
    }

    public func create(path: String, virtualSize: UInt64, options: NativeFormatOptions) throws {
        _ = try convert(ZeroSource(size: virtualSize), toPath: path, options: options,
                        writer: SparseImageWriter.Options(threads: 1, sync: false))
    }
}

/// The formats BootLab knows, in detection order.
public enum DiskFormatRegistry {
    /// Bytes `matches(head:tail:)` sees at the start of a file.
    public static let probeLength = 4096

    public static let drivers: [any DiskFormatDriver] = [
        VHDXDriver(),
        VMDKDriver(),
        QCOW2Driver(),
        VDIDriver(),
        VHDDriver(),
    ]

    public static var names: [String] { drivers.map(\.name) }

    public static func driver(named name: String) -> (any DiskFormatDriver)? {
        drivers.first { $0.name == name.lowercased() }
    }

    /// The driver whose signature the file carries, or nil (raw, a backup image, or unknown).
    public static func detect(path: String) throws -> (any DiskFormatDriver)? {
        let file = try RawFile(path: path)
        let head = try file.read(at: 0, count: Int(min(file.size, UInt64(probeLength))))
        let t = min(file.size, 512)
        let tail = try file.read(at: file.size - t, count: Int(t))
        return drivers.first { $0.matches(head: head, tail: tail) }
    }
}
