import BackupImage
import BlockCore
import DiskFormats
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The method's plugin file: writing it (`bootlab expose`) and opening it (the filter). See
/// docs/formats/plugin-file.md. Opening never touches the backup; the first payload read does.
public enum PluginFile {
    public enum PluginError: Error, CustomStringConvertible {
        case notAPlugin(String)
        case outsideTree(plugin: String, backup: String)
        /// What the plugin points at is not what it recorded: nothing is served.
        case mismatch(Mismatch)
        /// `expose` was asked to write the plugin over the backup itself.
        case pluginIsTheBackup(String)
        /// `expose` of a volume set: a member cannot be opened or disagrees with the manifest.
        case setMemberRefused(path: String, reason: String)
        /// Internal invariant: the view's layout changed with the pointer's contents (it must not:
        /// every format keeps the pointer in a reserved area of fixed size).
        case unstableLayout(draftFileSize: UInt64, finalFileSize: UInt64, draftPayloadStart: UInt64, finalPayloadStart: UInt64)

        /// Which structure disagrees, where, and how.
        public enum Mismatch: Sendable, Equatable, CustomStringConvertible {
            /// The backup header's image ID is not the recorded one (another backup at the path).
            case imageID(recorded: String, found: String)
            /// The backup header's SHA-256 is not the recorded one (the backup changed).
            case headerDigest(recorded: String, found: String)
            /// The view rendered from the backup has another file size or payload start.
            case skeletonLayout(format: String, recordedFileSize: UInt64, renderedFileSize: UInt64, recordedPayloadStart: UInt64, renderedPayloadStart: UInt64)
            /// The VHDX rendered from the backup differs from the plugin's skeleton from this byte on.
            case skeletonBytes(format: String, offset: UInt64)
            /// The recorded reconfiguration layer cannot be opened (missing, or made over another base).
            case layerUnusable(path: String, reason: String)
            case layerUnitSize(path: String, found: UInt64, recorded: UInt32)
            /// The layer holds other bytes than when the plugin was rendered.
            case layerDigest(path: String, recorded: String, found: String)
            /// A volume set's member is missing, another image, or changed.
            case setMember(path: String, reason: String)

            public var description: String {
                switch self {
                case let .imageID(recorded, found): return "backup header: image ID \(found) ≠ recorded \(recorded)"
                case .headerDigest: return "backup header: header digest differs from the one recorded"
                case let .skeletonLayout(format, rf, ff, rp, fp):
                    return "\(format.uppercased()) skeleton: the file rendered from the backup has size \(ff) and payload start \(fp), the plugin records \(rf) and \(rp)"
                case let .skeletonBytes(format, offset):
                    return "\(format.uppercased()) skeleton at 0x\(String(offset, radix: 16)): the file rendered from the backup differs from the plugin's skeleton"
                case let .layerUnusable(path, reason): return "reconfiguration layer \(path): \(reason)"
                case let .layerUnitSize(path, found, recorded):
                    return "reconfiguration layer \(path) has \(found)-byte units, the pointer records \(recorded)"
                case let .layerDigest(path, _, _):
                    return "reconfiguration layer \(path) changed since the plugin was rendered (digest differs); expose the backup again (which discards the layer) and reconfigure"
                case let .setMember(path, reason): return "volume set member \(path): \(reason)"
                }
            }
        }

        public var description: String {
            switch self {
            case .notAPlugin(let p): return "\(p) is not a BootLab plugin file (no plugin pointer where its format keeps one)"
            case let .outsideTree(plugin, backup):
                return "the backup \(backup) lies outside the plugin's directory tree (\(plugin)); pass --allow-outside to permit it"
            case .mismatch(let m): return "the backup does not match the plugin file: \(m); nothing is served"
            case .pluginIsTheBackup: return "refusing to write the plugin file over the backup itself"
            case let .setMemberRefused(path, reason): return "volume set member \(path): \(reason); nothing was exposed"
            case let .unstableLayout(df, ff, dp, fp):
                return "internal: the plugin's layout changed with the pointer's contents (file size \(df) → \(ff), payload start \(dp) → \(fp))"
            }
        }
    }

    public struct ExposeOptions: Sendable {
        public var composer = DiskComposer.Options()
        /// The plugin's native format (a `DiskFormatRegistry` name).
        public var format = VHDXView.formatName
        /// Format-specific options (`-o` keys such as VMDK `adapter_type`, VHD `subformat`).
        public var formatKeys: [String: String] = [:]
        /// The payload unit (VHDX block size, VMDK grain, qcow2 cluster); nil: the format's default.
        public var blockSize: UInt32?
        public var allowOutside = false
        public var passphrase: PassphraseSource?
        public var vault: String?
        /// For `exposeSource`: what the source holds, and its identity options.
        public var source = SourceExposeOptions()
        public init() {}
    }

    /// How `expose --source` treats an external source.
    public struct SourceExposeOptions: Sendable {
        /// What the source holds: a whole disk, one volume (composed like a volume-only backup),
        /// or nil: detect (a valid MBR/GPT partition table in sector 0 → disk, else volume).
        public var kind: SourceKind?
        /// Record the SHA-256 of the whole source (read once now, and at every open).
        public var verify = false
        /// A user's identifier recorded with the source.
        public var id: String?
        /// Bound on starting, connecting and each read.
        public var timeout: Double = ExternalSource.defaultTimeout
        /// What is known of the disk a volume came from (a `.bli` header records it; a user's
        /// format may not): with it, the composed disk keeps the original MBR fields and size.
        public var original: OriginalDisk?
        public init() {}
    }

    /// The original disk of a volume-only source.
    public struct OriginalDisk: Sendable {
        public var partitionStartLBA: UInt64
        public var diskSize: UInt64
        public var diskSignature: UInt32
        public var partitionType: UInt8
        public var bootable: Bool
        public init(partitionStartLBA: UInt64, diskSize: UInt64, diskSignature: UInt32, partitionType: UInt8, bootable: Bool) {
            self.partitionStartLBA = partitionStartLBA
            self.diskSize = diskSize
            self.diskSignature = diskSignature
            self.partitionType = partitionType
            self.bootable = bootable
        }
    }

    /// What `expose` did, for humans and `--json`.
    public struct ExposeReport: Codable, Sendable {
        public var plugin: String
        public var backup: String
        public var backupPathInPlugin: String
        public var composition: String
        public var partitionStartLBA: UInt64?
        public var patchedBytes: Int
        public var virtualSize: UInt64
        /// The plugin's native format and the size of the full file it stands for.
        public var format: String
        public var fileSize: UInt64
        /// Same as `fileSize` (the name of the first releases, kept for scripts that read it).
        public var vhdxFileSize: UInt64
        public var payloadStart: UInt64
        public var blockSize: UInt32
        public var allocatedBlocks: UInt64
    }

    // MARK: Expose

    /// The pointer of a new plugin in `options.format` (VHDX, or a native format's driver), before
    /// the view records its layout in it; the same for a backup, a volume set and an external source.
    static func newPointer(options: ExposeOptions, backupPath: String, backupImageID: String, backupHeaderDigest: String,
                           composition: PluginPointer.Composition, sectorSize: UInt32, seed: [UInt8], pluginPath: String) throws -> PluginPointer {
        if options.format == VHDXView.formatName {
            guard options.formatKeys.isEmpty else {
                throw NativeFormatOptionError(format: options.format, reason: "a VHDX plugin takes no format options (\(options.formatKeys.keys.sorted().joined(separator: ", ")))")
            }
            return PluginPointer(backupPath: backupPath, backupImageID: backupImageID, backupHeaderDigest: backupHeaderDigest,
                                 composition: composition,
                                 vhdx: .init(blockSize: 0, logicalSectorSize: sectorSize, physicalSectorSize: sectorSize,
                                             seedHex: seed.hex, fileSize: 0, payloadStart: 0))
        }
        guard DiskFormatRegistry.driver(named: options.format) != nil else {
            throw NativeFormatOptionError(format: options.format, reason: "not a native format this bootlab writes (\(DiskFormatRegistry.names.joined(separator: ", ")))")
        }
        var keys = options.formatKeys
        let subformat = keys.removeValue(forKey: "subformat")
        var pointer = PluginPointer(backupPath: backupPath, backupImageID: backupImageID, backupHeaderDigest: backupHeaderDigest,
                                    composition: composition,
                                    native: .init(format: options.format.lowercased(), subformat: subformat, logicalSectorSize: sectorSize,
                                                  allocationUnit: 0, seedHex: seed.hex, keys: keys))
        pointer.native!.fileName = String(pluginPath.split(separator: "/").last ?? "")
        return pointer
    }

    /// A reconfiguration layer beside the plugin belonged to the plugin just replaced, whose
    /// pointer recorded it; a new plugin starts without one (`bootlab reconfigure` makes it).
    static func removeReconfigurationLayer(besidePlugin pluginPath: String) {
        let layer = ReconfigurationLayer.defaultPath(forPlugin: pluginPath)
        unlink(layer)
        unlink(layer + ".map")
    }

    /// Writes `pluginPath` for the backup at `backupPath`: the VHDX skeleton of the exposed disk
    /// plus the pointer, sparse up to the full VHDX size. The backup is opened read-only.
    @discardableResult
    public static func expose(backupPath: String, pluginPath: String, options: ExposeOptions) throws -> ExposeReport {
        let pluginAbs = absolutePath(pluginPath)
        let backupAbs = absolutePath(backupPath)
        guard realPathOrSelf(pluginAbs) != realPathOrSelf(backupAbs) else {
            throw PluginError.pluginIsTheBackup(pluginAbs)
        }
        let pointerPath = try pointerPath(backup: backupAbs, pluginDirectory: directory(of: pluginAbs), allowOutside: options.allowOutside)
        let backup = try BackupImageReader.open(path: backupAbs, passphrase: options.passphrase, vault: options.vault)
        var composer = options.composer
        if let esp = composer.esp {
            // The ESP's files go beside the plugin before the composition that reads them.
            composer.espDirectory = SynthesizedESP.sidecarName(pluginPath: pluginAbs)
            _ = try SynthesizedESP.store(esp, pluginPath: pluginAbs)
        }
        let composition = try DiskComposer.plan(header: backup.header, volume: backup, options: composer)
        let disk = try DiskComposer.compose(volume: backup, composition: composition, pluginDirectory: directory(of: pluginAbs))

        // The pointer records the view's layout (allocation unit, file size, payload start).
        var pointer = try newPointer(options: options, backupPath: pointerPath, backupImageID: backup.header.imageID.description,
                                     backupHeaderDigest: backup.headerDigest.hex, composition: composition,
                                     sectorSize: UInt32(composition.sectorSize), seed: seed(for: backup), pluginPath: pluginAbs)
        let view = try LayerStack.renderRecordingLayout(&pointer, over: disk, allocationUnit: options.blockSize.map(UInt64.init))

        try writeSkeleton(view, to: pluginAbs)
        removeReconfigurationLayer(besidePlugin: pluginAbs)
        return ExposeReport(plugin: pluginPath, backup: backupPath, backupPathInPlugin: pointerPath,
                            composition: composition.kind, partitionStartLBA: composition.partitionStartLBA,
                            patchedBytes: composition.volumePatches.reduce(0) { $0 + $1.bytes.count },
                            virtualSize: disk.size, format: pointer.format, fileSize: view.size, vhdxFileSize: view.size,
                            payloadStart: view.payloadStart, blockSize: UInt32(clamping: view.allocationUnit),
                            allocatedBlocks: try view.allocatedUnitCount())
    }

    /// Writes `pluginPath` for a volume set (`BackupSetManifest` at `manifestPath`): one GPT disk
    /// composed from every member at its original start (`DiskComposer.planSet`), with a
    /// version-3 pointer naming each member (path relative to the plugin, image ID, header
    /// digest, size). Each member is opened and checked against the manifest first: a missing
    /// or changed member, or one whose header disagrees with the manifest, is refused naming it.
    @discardableResult
    public static func exposeSet(manifestPath: String, pluginPath: String, options: ExposeOptions) throws -> ExposeReport {
        let pluginAbs = absolutePath(pluginPath)
        let manifestAbs = absolutePath(manifestPath)
        guard realPathOrSelf(pluginAbs) != realPathOrSelf(manifestAbs) else { throw PluginError.pluginIsTheBackup(pluginAbs) }
        let manifest = try BackupSetManifest.read(path: manifestAbs)
        let pluginDirectory = directory(of: pluginAbs)
        let manifestPointerPath = try pointerPath(backup: manifestAbs, pluginDirectory: pluginDirectory, allowOutside: options.allowOutside)
        var passphrase = options.passphrase
        var members: [PluginPointer.BackupSetRecord.Member] = []
        var opened: [String: any BlockSource] = [:]
        for (i, v) in manifest.volumes.enumerated() {
            let path = directory(of: manifestAbs) + "/" + v.file
            guard realPathOrSelf(pluginAbs) != realPathOrSelf(path) else { throw PluginError.pluginIsTheBackup(pluginAbs) }
            let backup: BackupImageReader
            do {
                if let p = passphrase, (try? BackupImageReader.readHeader(path: path))?.header.isEncrypted == true { passphrase = .bytes(try p.resolve()) }
                backup = try BackupImageReader.open(path: path, passphrase: passphrase, vault: options.vault)
            } catch {
                throw PluginError.setMemberRefused(path: path, reason: "cannot be opened: \(error)")
            }
            let h = backup.header
            func differs(_ what: String, _ found: String, _ recorded: String) -> PluginError {
                .setMemberRefused(path: path, reason: "\(what) \(found) ≠ \(recorded) in the manifest (volumes[\(i)])")
            }
            guard h.imageID == v.imageID else { throw differs("image ID", h.imageID.description, v.imageID.description) }
            guard backup.headerDigest.hex == v.headerDigest else {
                throw PluginError.setMemberRefused(path: path, reason: "header digest differs from the manifest's (the image changed since the set was written)")
            }
            // The header must describe the partition the manifest places it in.
            guard h.sourceKind == .volume, h.partitionScheme == .gpt else { throw differs("source", "\(h.sourceKind) (\(h.partitionScheme))", "a GPT volume") }
            guard h.gptDiskGUID == manifest.diskGUID else { throw differs("disk GUID", h.gptDiskGUID.description, manifest.diskGUID.description) }
            guard Int(h.partitionNumber) == v.number else { throw differs("partition number", "\(h.partitionNumber)", "\(v.number)") }
            guard h.partitionStartLBA == v.firstLBA else { throw differs("start LBA", "\(h.partitionStartLBA)", "\(v.firstLBA)") }
            guard h.virtualSize == v.size else { throw differs("size", "\(h.virtualSize)", "\(v.size)") }
            guard h.gptPartitionGUID == v.uniqueGUID, h.gptPartitionType == v.typeGUID else {
                throw differs("partition GUIDs", "\(h.gptPartitionType)/\(h.gptPartitionGUID)", "\(v.typeGUID)/\(v.uniqueGUID)")
            }
            guard (h.logicalSectorSize == 0 ? 512 : Int(h.logicalSectorSize)) == manifest.sectorSize else {
                throw differs("sector size", "\(h.logicalSectorSize)", "\(manifest.sectorSize)")
            }
            let member = PluginPointer.BackupSetRecord.Member(
                backupPath: try pointerPath(backup: path, pluginDirectory: pluginDirectory, allowOutside: options.allowOutside),
                backupImageID: h.imageID.description, backupHeaderDigest: backup.headerDigest.hex, size: backup.size)
            members.append(member)
            opened[member.content] = backup
        }
        let set = PluginPointer.BackupSetRecord(members: members)
        let composition = try DiskComposer.planSet(manifest, options: options.composer)
        let disk = try DiskComposer.compose(volume: nil, members: opened, composition: composition, pluginDirectory: pluginDirectory)
        let identity = set.identity
        let seed = Array(SHA256.hash(identity).prefix(16))
        var pointer = try newPointer(options: options, backupPath: manifestPointerPath, backupImageID: "set",
                                     backupHeaderDigest: identity.hex, composition: composition,
                                     sectorSize: UInt32(composition.sectorSize), seed: seed, pluginPath: pluginAbs)
        pointer.version = PluginPointer.volumeSetVersion
        pointer.backupSet = set
        let view = try LayerStack.renderRecordingLayout(&pointer, over: disk, allocationUnit: options.blockSize.map(UInt64.init))
        try writeSkeleton(view, to: pluginAbs)
        removeReconfigurationLayer(besidePlugin: pluginAbs)
        return ExposeReport(plugin: pluginPath, backup: manifestPath, backupPathInPlugin: manifestPointerPath,
                            composition: "gpt", partitionStartLBA: nil, patchedBytes: 0,
                            virtualSize: disk.size, format: pointer.format, fileSize: view.size, vhdxFileSize: view.size,
                            payloadStart: view.payloadStart, blockSize: UInt32(clamping: view.allocationUnit),
                            allocatedBlocks: try view.allocatedUnitCount())
    }

    /// Writes `pluginPath` for an external source (an nbdkit plugin, an NBD export, an image):
    /// as `expose` for a backup, with a version-2 pointer recording the source's argv (paths
    /// relative to the plugin's directory) and its identity (size, sampled digests; whole digest
    /// and ID when asked). The source is read for its size, its samples and the extents the
    /// view's layout needs — and then closed: serving starts it again on the first payload read.
    @discardableResult
    public static func exposeSource(_ spec: BackupSourceSpec, pluginPath: String, options: ExposeOptions) throws -> ExposeReport {
        let pluginAbs = absolutePath(pluginPath)
        let pluginDirectory = directory(of: pluginAbs)
        let recorded = try spec.recorded(pluginDirectory: pluginDirectory, allowOutside: options.allowOutside)
        if spec.kind == .image || spec.kind == .qemuNBD {
            guard realPathOrSelf(pluginAbs) != realPathOrSelf(ExternalSource.absolute(spec.argv[0], in: FileManager.default.currentDirectoryPath)) else {
                throw PluginError.pluginIsTheBackup(pluginAbs)
            }
        }
        // Opened from the plugin's directory with the recorded (relative) paths: exactly what a
        // filter will run.
        let source = try ExternalSource.open(recorded, directory: pluginDirectory, timeout: options.source.timeout)
        let identity = try SourceIdentity.measure(source, full: options.source.verify, id: options.source.id)
        var header = BackupHeader()
        header.imageID = GUID(bytes: Array(identity.digestBytes.prefix(16)))
        header.sourceKind = try options.source.kind ?? DiskComposer.detectKind(source)
        header.fileSystemHint = DiskComposer.fileSystemHint(source)
        header.bootable = true
        if let o = options.source.original {
            header.partitionScheme = .mbr
            header.partitionStartLBA = o.partitionStartLBA
            header.originalDiskSize = o.diskSize
            header.mbrDiskSignature = o.diskSignature
            header.mbrPartitionType = o.partitionType
            header.bootable = o.bootable
        }
        let composition = try DiskComposer.plan(header: header, volume: source, options: options.composer)
        let disk = try DiskComposer.compose(volume: source, composition: composition)
        let seed = Array(SHA256.hash(identity.digestBytes).prefix(16))
        var pointer = try newPointer(options: options, backupPath: "", backupImageID: "source",
                                     backupHeaderDigest: identity.digestBytes.hex, composition: composition,
                                     sectorSize: 512, seed: seed, pluginPath: pluginAbs)
        pointer.version = PluginPointer.externalSourceVersion
        pointer.source = .init(spec: recorded, identity: identity)
        let view = try LayerStack.renderRecordingLayout(&pointer, over: disk, allocationUnit: options.blockSize.map(UInt64.init))
        try writeSkeleton(view, to: pluginAbs)
        removeReconfigurationLayer(besidePlugin: pluginAbs)
        return ExposeReport(plugin: pluginPath, backup: spec.description, backupPathInPlugin: recorded.description,
                            composition: composition.kind, partitionStartLBA: composition.partitionStartLBA,
                            patchedBytes: composition.volumePatches.reduce(0) { $0 + $1.bytes.count },
                            virtualSize: disk.size, format: pointer.format, fileSize: view.size, vhdxFileSize: view.size,
                            payloadStart: view.payloadStart, blockSize: UInt32(clamping: view.allocationUnit),
                            allocatedBlocks: try view.allocatedUnitCount())
    }

    /// GUIDs of the exposed VHDX derive from the backup's identity: same backup, same bytes.
    static func seed(for backup: BackupImageReader) -> [UInt8] {
        Array(SHA256.hash(backup.header.imageID.bytes + backup.headerDigest).prefix(16))
    }

    // MARK: Open

    /// Opens a plugin file without opening the backup.
    public static func open(pluginPath: String, options: OpenOptions = OpenOptions()) throws -> ExposedImage {
        let (pointer, skeleton) = try PluginPointer.read(pluginPath: pluginPath)
        return try ExposedImage(pluginPath: pluginPath, pointer: pointer, skeleton: skeleton, options: options)
    }

    /// The plugin at `path`, parsed once, or nil when the file is not a plugin (not a VHDX, or
    /// no readable pointer: front-ends serve or pass it through as it is). A pointer of a version
    /// this release does not read is refused (see `PluginPointer.readableVersions`), as are
    /// problems found once the pointer is read (a backup outside the tree, a short skeleton).
    public static func recognize(path: String, options: OpenOptions) throws -> ExposedImage? {
        let found: (PluginPointer, VHDXFile?)
        do {
            found = try PluginPointer.read(pluginPath: path)
        } catch let e as PluginPointer.VersionError {
            throw e
        } catch {
            return nil
        }
        return try ExposedImage(pluginPath: path, pointer: found.0, skeleton: found.1, options: options)
    }

    public struct OpenOptions: Sendable {
        public var passphrase: PassphraseSource?
        public var vault: String?
        public var allowOutside = false
        public var stats = BackupStats()
        /// nbdkit plugins an external source may name rather than carry inside the plugin's tree
        /// (`--allow-source-plugin NAME`).
        public var allowedSourcePlugins: Set<String> = []
        /// Bound, in seconds, on starting an external source, connecting to it and each read.
        public var sourceTimeout: Double = ExternalSource.defaultTimeout
        /// The `--source-id` the opener expects the pointer to record, if any.
        public var sourceID: String?
        /// Lab fault plan (test-only): `stale-block` acts on the backup below the composition.
        public var faults: FaultPlan = .none
        /// Opens the external source instead of `ExternalSource.open` (which starts its server):
        /// `bootlab serve`'s nbdkit filter mode reads the source through the plugin nbdkit
        /// already runs below the filter. Confinement and the identity check apply unchanged.
        public var sourceOpener: (@Sendable (BackupSourceSpec, _ directory: String) throws -> any BlockSource)?
        public init() {}
    }

    /// Cheap test: is this file a plugin file (a VHDX carrying our pointer)? A pointer of a
    /// version this release does not read counts: opening it then says how to re-expose.
    public static func isPlugin(path: String) -> Bool {
        do {
            _ = try PluginPointer.read(pluginPath: path)
            return true
        } catch is PluginPointer.VersionError {
            return true
        } catch {
            return false
        }
    }

    // MARK: Paths

    static func pointerPath(backup: String, pluginDirectory: String, allowOutside: Bool) throws -> String {
        let b = realPathOrSelf(backup), d = realPathOrSelf(pluginDirectory)
        if b.hasPrefix(d.hasSuffix("/") ? d : d + "/") {
            return String(b.dropFirst(d.hasSuffix("/") ? d.count : d.count + 1))
        }
        guard allowOutside else { throw PluginError.outsideTree(plugin: d, backup: b) }
        return b
    }

    /// Resolves a pointer path against the plugin's directory and enforces the tree rule.
    static func resolve(pointerPath p: String, pluginDirectory: String, allowOutside: Bool) throws -> String {
        let joined = p.hasPrefix("/") ? p : pluginDirectory + "/" + p
        let real = realPathOrSelf(joined), d = realPathOrSelf(pluginDirectory)
        if !allowOutside && !real.hasPrefix(d.hasSuffix("/") ? d : d + "/") {
            throw PluginError.outsideTree(plugin: d, backup: real)
        }
        return joined
    }

    public static func absolutePath(_ p: String) -> String {
        if p.hasPrefix("/") { return p }
        return FileManager.default.currentDirectoryPath + "/" + p
    }

    public static func directory(of p: String) -> String {
        guard let slash = p.lastIndex(of: "/") else { return "." }
        return slash == p.startIndex ? "/" : String(p[..<slash])
    }

    static func realPathOrSelf(_ p: String) -> String {
        guard let r = realpath(p, nil) else { return p }
        defer { free(r) }
        return String(cString: r)
    }
}
