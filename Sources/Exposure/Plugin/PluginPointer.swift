import BlockCore
import DiskFormats
import Foundation

/// What a plugin file knows about the backup it stands for — carried where the plugin's native
/// format has room (a VHDX *user* metadata item; see `PluginPointerPlacement` for the others), so
/// the plugin stays a valid native file for tools that never see the filter, and the filter finds everything it needs to answer metadata reads without opening the
/// backup (deferred open). Format (docs/formats/plugin-file.md):
///
///     0   8  magic "BLPTR\0\0\1"
///     8   4  u32 length N of the JSON document
///     12  4  u32 CRC-32C of the JSON document
///     16  N  UTF-8 JSON (PluginPointer), N ≤ 64 KiB
///
/// This type is the pointer's one owner: it alone encodes it, decodes it, places it in the
/// skeleton's metadata (`metadataItem`) and finds it there (`read`).
///
/// Versions (docs/formats/plugin-file.md, "Versions"): a writer always writes `currentVersion`;
/// a reader reads every version in `readableVersions`. The rule for the releases to come: a
/// plugin written by one release stays readable by the next (the next release's
/// `readableVersions` still holds this `currentVersion`), or it is refused with
/// `VersionError`, which says how to re-expose. Any change an older reader could misread —
/// a field that changes the bytes served, a changed meaning — takes a new version.
public struct PluginPointer: Codable, Sendable, Equatable {
    /// The user metadata item that holds the pointer.
    public static let itemID = PluginPointerPlacement.vhdxItemID
    public static let magic: [UInt8] = Array("BLPTR".utf8) + [0, 0, 1]
    public static let maxDocumentLength = 64 << 10
    /// The newest version this release writes: 2, a pointer whose disk comes from an external
    /// `source` (an nbdkit plugin, an NBD export, an image). A pointer to a `.bli` backup is still
    /// written as version 1 (`backupImageVersion`): its fields and meaning are unchanged, so
    /// plugins of `.bli` backups keep their exact bytes and stay readable by older releases.
    public static let currentVersion = 3
    /// The version of a pointer to a `.bli` backup (no `source`).
    public static let backupImageVersion = 1
    /// The version of a pointer to an external `source`.
    public static let externalSourceVersion = 2
    /// The version of a pointer to a volume set (`backupSet`: several `.bli` images of one disk).
    public static let volumeSetVersion = 3
    /// The versions this release reads.
    public static let readableVersions: ClosedRange<Int> = 1...3

    public var version: Int = PluginPointer.backupImageVersion
    /// Path of the backup, relative to the plugin file's directory (absolute only with
    /// `--allow-outside`).
    public var backupPath: String
    /// The backup's image ID and the SHA-256 of its header: the file pointed to must match both.
    public var backupImageID: String
    public var backupHeaderDigest: String
    /// How the disk is composed from the backup.
    public var composition: Composition
    /// The VHDX synthesis parameters, so the filter renders exactly the bytes of the skeleton
    /// (VHDX plugins; their pointer is unchanged since the first release).
    public var vhdx: VHDXParameters?
    /// The view's parameters for a plugin in any other native format (exactly one of `vhdx` and
    /// `native` is present).
    public var native: NativeParameters?
    /// The reconfiguration layer stacked on the composed disk, if the plugin has one (optional:
    /// absent in plugins that were never reconfigured, which keep their exact bytes).
    public var reconfiguration: Reconfiguration?
    /// Version 2: the disk (or volume) comes from this external source rather than a `.bli`
    /// backup; `backupPath` is then empty, `backupImageID` is "source", and `backupHeaderDigest`
    /// is `SourceIdentity.digestBytes` (the base of derived identities such as the
    /// reconfiguration layer's). A version-1 reader would ignore the field and serve the wrong
    /// bytes, hence the version.
    public var source: ExternalSourceRecord?
    /// Version 3: the disk is composed from several `.bli` images of one disk (a volume set,
    /// `BackupSetManifest`); each GPT partition whose `content` is `backup:<image ID>` reads the
    /// member with that ID. `backupPath` is then the manifest's path (for messages and
    /// re-exposing; opening does not read it), `backupImageID` is "set", and
    /// `backupHeaderDigest` is `BackupSetRecord.identity` (hex), the base of derived identities.
    /// A version-1 reader would look for one backup at the manifest's path, hence the version.
    public var backupSet: BackupSetRecord?

    /// The members of a volume set, each with its identity check.
    public struct BackupSetRecord: Codable, Sendable, Equatable {
        /// At most this many members (a bound checked on decode).
        public static let maxMembers = 128
        public var members: [Member]

        public struct Member: Codable, Sendable, Equatable {
            /// The `content` string of the partition it fills: `backup:<image ID>`.
            public var content: String
            /// Relative to the plugin's directory (tree rule as for `backupPath`).
            public var backupPath: String
            public var backupImageID: String
            /// SHA-256 (hex) of the member's header.
            public var backupHeaderDigest: String
            /// The member's virtual size: the composition is planned without opening it.
            public var size: UInt64

            public init(backupPath: String, backupImageID: String, backupHeaderDigest: String, size: UInt64) {
                content = BackupSetRecord.content(imageID: backupImageID)
                self.backupPath = backupPath
                self.backupImageID = backupImageID
                self.backupHeaderDigest = backupHeaderDigest
                self.size = size
            }
        }

        public init(members: [Member]) { self.members = members }

        /// The `content` string of a member's partition.
        public static func content(imageID: String) -> String { "backup:" + imageID }

        /// The set's identity: SHA-256 of the tag `bootlab volume set v1`, then each member's
        /// image ID (its text, NUL-terminated) and header digest (hex text, NUL-terminated), in
        /// order. It stands for the set where a single backup's header digest stands elsewhere.
        public var identity: [UInt8] {
            var bytes = Array("bootlab volume set v1".utf8)
            for m in members { bytes += Array(m.backupImageID.utf8) + [0] + Array(m.backupHeaderDigest.utf8) + [0] }
            return SHA256.hash(bytes)
        }
    }

    /// The external source a version-2 pointer reads, and how to know it is still the same one.
    public struct ExternalSourceRecord: Codable, Sendable, Equatable {
        public var spec: BackupSourceSpec
        public var identity: SourceIdentity
        public init(spec: BackupSourceSpec, identity: SourceIdentity) {
            self.spec = spec
            self.identity = identity
        }
    }

    /// Where the reconfiguration layer lives and what it must hold (docs/formats/plugin-file.md).
    public struct Reconfiguration: Codable, Sendable, Equatable {
        /// The layer's data file, relative to the plugin's directory (its map is `<path>.map`).
        public var layerPath: String
        /// `ReconfigurationLayer.digest` of the layer: a layer changed since the plugin was
        /// rendered is refused, because the skeleton (BAT) was rendered from its extents.
        public var layerDigest: String
        /// Bytes the layer holds (its written units).
        public var layerBytes: UInt64
        public var unitSize: UInt32
        /// Targets the layer was reconfigured for, in the order they were applied.
        public var targets: [String]

        public init(layerPath: String, layerDigest: String, layerBytes: UInt64, unitSize: UInt32, targets: [String]) {
            self.layerPath = layerPath
            self.layerDigest = layerDigest
            self.layerBytes = layerBytes
            self.unitSize = unitSize
            self.targets = targets
        }
    }

    public struct Composition: Codable, Sendable, Equatable {
        /// "disk": the backup is a whole disk, served as is; "volume": an MBR is synthesized;
        /// "gpt": a GPT is synthesized (`gpt` says how; docs/formats/gpt.md).
        public var kind: String
        public var diskSize: UInt64
        public var partitionStartLBA: UInt64?
        /// Sector 0 of the composed disk (hex): boot code, signature, partition table.
        public var mbrHex: String?
        /// Edits to the volume (boot-sector hidden sectors) that live here, never in the backup.
        public var volumePatches: [PatchedSource.Patch]
        /// The GPT composition ("gpt" kind only; absent, so not encoded, for the others).
        public var gpt: GPTRecord?
        /// A whole disk's logical sector size when it is not 512 (a 4Kn disk's backup records
        /// 4096): the native view must advertise it (VHDX) or refuse (formats with 512-byte
        /// sectors). Absent — so not encoded, and every existing pointer unchanged — for 512.
        public var diskSectorSize: Int?

        public init(kind: String, diskSize: UInt64, partitionStartLBA: UInt64? = nil, mbrHex: String? = nil,
                    volumePatches: [PatchedSource.Patch] = [], gpt: GPTRecord? = nil) {
            self.kind = kind
            self.diskSize = diskSize
            self.partitionStartLBA = partitionStartLBA
            self.mbrHex = mbrHex
            self.volumePatches = volumePatches
            self.gpt = gpt
        }

        /// Logical block size of the composed disk (what the native view must advertise).
        public var sectorSize: Int { gpt?.sectorSize ?? diskSectorSize ?? 512 }
    }

    public struct VHDXParameters: Codable, Sendable, Equatable {
        public var blockSize: UInt32
        public var logicalSectorSize: UInt32
        public var physicalSectorSize: UInt32
        public var seedHex: String
        /// Size of the full VHDX file the filter serves, and where payload begins.
        public var fileSize: UInt64
        public var payloadStart: UInt64
    }

    /// What a non-VHDX plugin's filter needs to render exactly the bytes the plugin holds.
    public struct NativeParameters: Codable, Sendable, Equatable {
        /// The driver's name (`DiskFormatRegistry`): vmdk, vhd, qcow2, vdi.
        public var format: String
        public var subformat: String?
        public var logicalSectorSize: UInt32
        public var allocationUnit: UInt64
        public var seedHex: String
        /// Format-specific `-o` keys the view was rendered with (e.g. VMDK adapter_type).
        public var keys: [String: String]
        /// The plugin file's name at expose time, for formats whose structures name the file (a
        /// VMDK extent line); the served bytes depend on it.
        public var fileName: String?
        /// Size of the full file the filter serves; where payload begins; where trailing
        /// structures (a VHD footer) begin (= fileSize when there are none).
        public var fileSize: UInt64
        public var payloadStart: UInt64
        public var trailerStart: UInt64

        public init(format: String, subformat: String?, logicalSectorSize: UInt32, allocationUnit: UInt64, seedHex: String,
                    keys: [String: String], fileSize: UInt64 = 0, payloadStart: UInt64 = 0, trailerStart: UInt64 = 0) {
            self.format = format
            self.subformat = subformat
            self.logicalSectorSize = logicalSectorSize
            self.allocationUnit = allocationUnit
            self.seedHex = seedHex
            self.keys = keys
            self.fileSize = fileSize
            self.payloadStart = payloadStart
            self.trailerStart = trailerStart
        }

        /// The options the view is rendered with.
        public var options: NativeFormatOptions {
            var o = NativeFormatOptions(subformat: subformat, logicalSectorSize: logicalSectorSize,
                                        allocationUnit: allocationUnit == 0 ? nil : allocationUnit,
                                        seed: [UInt8](hex: seedHex) ?? [], keys: keys)
            o.fileName = fileName
            return o
        }
    }

    public init(backupPath: String, backupImageID: String, backupHeaderDigest: String,
                composition: Composition, vhdx: VHDXParameters) {
        self.backupPath = backupPath
        self.backupImageID = backupImageID
        self.backupHeaderDigest = backupHeaderDigest
        self.composition = composition
        self.vhdx = vhdx
    }

    public init(backupPath: String, backupImageID: String, backupHeaderDigest: String,
                composition: Composition, native: NativeParameters) {
        self.backupPath = backupPath
        self.backupImageID = backupImageID
        self.backupHeaderDigest = backupHeaderDigest
        self.composition = composition
        self.native = native
    }

    /// The plugin's native format ("vhdx", "vmdk", …).
    public var format: String { native?.format ?? VHDXView.formatName }
    /// Size of the full native file the filter serves.
    public var fileSize: UInt64 { native?.fileSize ?? vhdx?.fileSize ?? 0 }
    /// The first byte not in the skeleton.
    public var payloadStart: UInt64 { native?.payloadStart ?? vhdx?.payloadStart ?? 0 }
    /// The first byte of the trailing structures the plugin stores (`fileSize` when none).
    public var trailerStart: UInt64 { native?.trailerStart ?? fileSize }

    public func encode() throws -> [UInt8] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let json = Array(try enc.encode(self))
        var out = Self.magic
        out.appendLE32(UInt32(json.count))
        out.appendLE32(CRC32C.checksum(json))
        out += json
        return out
    }

    /// Parses an item's bytes; `base` is the item's file offset, for error messages; `plugin`
    /// names the plugin file in a `VersionError`.
    public static func decode(_ bytes: [UInt8], base: UInt64 = 0, plugin: String? = nil) throws -> PluginPointer {
        let v = ByteView(bytes, base: base, format: "plugin file", structure: "plugin pointer")
        guard try v.slice(0, 8) == magic else { throw v.error(at: 0, "bad magic (not a BootLab plugin pointer)") }
        let n = Int(try v.u32(8))
        guard n <= maxDocumentLength else { throw v.error(at: 8, "document length \(n) exceeds \(maxDocumentLength)") }
        let json = try v.slice(16, n)
        let crc = try v.u32(12)
        guard CRC32C.checksum(json) == crc else { throw v.error(at: 12, "checksum mismatch") }
        // The version first, alone: a later version may change any other field, so its
        // refusal must not depend on decoding them.
        struct Versioned: Decodable {
            var version: Int
            var backupPath: String?
        }
        let probe: Versioned
        do { probe = try JSONDecoder().decode(Versioned.self, from: Data(json)) } catch {
            throw v.error(at: 16, "invalid document: \(error)")
        }
        guard readableVersions.contains(probe.version) else {
            throw VersionError(plugin: plugin, found: probe.version, backupPath: probe.backupPath)
        }
        let pointer: PluginPointer
        do {
            pointer = try JSONDecoder().decode(PluginPointer.self, from: Data(json))
        } catch {
            throw v.error(at: 16, "invalid document: \(error)")
        }
        guard (pointer.source != nil) == (pointer.version == externalSourceVersion) else {
            throw v.error(at: 16, "invalid document: version \(pointer.version) \(pointer.source == nil ? "requires" : "cannot carry") an external `source`")
        }
        guard (pointer.backupSet != nil) == (pointer.version == volumeSetVersion) else {
            throw v.error(at: 16, "invalid document: version \(pointer.version) \(pointer.backupSet == nil ? "requires" : "cannot carry") a `backupSet`")
        }
        if let set = pointer.backupSet {
            guard !set.members.isEmpty, set.members.count <= BackupSetRecord.maxMembers else {
                throw v.error(at: 16, "invalid document: \(set.members.count) volume set members (expected 1 … \(BackupSetRecord.maxMembers))")
            }
            guard Set(set.members.map(\.content)).count == set.members.count,
                  set.members.allSatisfy({ $0.content == BackupSetRecord.content(imageID: $0.backupImageID) }) else {
                throw v.error(at: 16, "invalid document: volume set members must have distinct image IDs and contents `backup:<image ID>`")
            }
        }
        guard (pointer.vhdx == nil) != (pointer.native == nil) else {
            throw v.error(at: 16, "invalid document: exactly one of the view parameters `vhdx` and `native` must be present")
        }
        if let ss = pointer.composition.diskSectorSize {
            // Only a whole disk records it, and only a sector size a disk has (512 is left out).
            guard pointer.composition.kind == "disk", ss == 4096 else {
                throw v.error(at: 16, "invalid document: diskSectorSize \(ss) (only 4096, on a \"disk\" composition)")
            }
        }
        guard pointer.payloadStart <= pointer.trailerStart, pointer.trailerStart <= pointer.fileSize else {
            throw v.error(at: 16, "invalid document: payload start \(pointer.payloadStart), trailer start \(pointer.trailerStart) and file size \(pointer.fileSize) are out of order")
        }
        return pointer
    }

    /// The pointer as the skeleton's user metadata item (IsUser, not required).
    public func metadataItem() throws -> VHDXUserMetadataItem {
        VHDXUserMetadataItem(id: Self.itemID, bytes: try encode())
    }

    /// Finds and decodes the pointer where the plugin's format keeps it (the format detected by
    /// content); for a VHDX plugin returns the parsed skeleton too, so the plugin is parsed once.
    public static func read(pluginPath: String) throws -> (PluginPointer, VHDXFile?) {
        guard let driver = try DiskFormatRegistry.detect(path: pluginPath) else {
            throw PluginFile.PluginError.notAPlugin(pluginPath)
        }
        let pointer: PluginPointer
        var skeleton: VHDXFile?
        if driver.name == VHDXView.formatName {
            let vhdx = try VHDXFile.open(path: pluginPath)
            guard let item = vhdx.metadata.userItems.first(where: { $0.itemID == itemID }) else {
                throw PluginFile.PluginError.notAPlugin(pluginPath)
            }
            pointer = try decode(item.data, plugin: pluginPath)
            skeleton = vhdx
        } else {
            guard let blob = try driver.readPluginPointer(path: pluginPath) else { throw PluginFile.PluginError.notAPlugin(pluginPath) }
            pointer = try decode(blob, plugin: pluginPath)
        }
        guard pointer.format == driver.name else {
            throw FormatError("plugin file", "plugin pointer", at: 0, "the pointer describes a \(pointer.format) file, the file is \(driver.name)")
        }
        return (pointer, skeleton)
    }

    /// A pointer of a version this release does not read (written by a later release, or by
    /// one whose format this release no longer reads). Says how to re-expose.
    public struct VersionError: Error, CustomStringConvertible, Equatable, Sendable {
        public var plugin: String?
        public var found: Int
        /// The backup path the pointer records, when it could be read (relative to the plugin).
        public var backupPath: String?

        public var description: String {
            let name = plugin ?? "the plugin file"
            let range = PluginPointer.readableVersions
            let reads = range.lowerBound == range.upperBound ? "\(range.lowerBound)" : "\(range.lowerBound)–\(range.upperBound)"
            var backup = backupPath ?? "BACKUP"
            if let plugin, let b = backupPath, !b.hasPrefix("/") { backup = PluginFile.directory(of: plugin) + "/" + b }
            return "plugin pointer version \(found) of \(name) is not one this bootlab reads (version \(reads)); "
                + "re-expose the backup with this bootlab: bootlab expose \(backup) --out \(plugin ?? "PLUGIN") "
                + "(then bootlab reconfigure again if the plugin was reconfigured)"
        }
    }
}
