import BackupImage
import BlockCore
import DiskFormats
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The plugin's reconfiguration layer: opening it for the engine, stacking it for serving, and
/// recording it in the pointer with the skeleton re-rendered (docs/formats/plugin-file.md).
extension PluginFile {
    /// What recording a layer did.
    public struct LayerRecord: Codable, Sendable {
        public var plugin: String
        public var layer: String
        public var layerDigest: String
        public var layerBytes: UInt64
        public var targets: [String]
        /// False when the pointer already said exactly this (nothing rewritten).
        public var pluginRewritten: Bool
        public var vhdxFileSize: UInt64
        public var allocatedBlocks: UInt64
    }

    /// The disk a plugin serves below the VHDX view: the composed disk, with the reconfiguration
    /// layer on top when the pointer records one. The layer is opened read-only and must match
    /// the recorded digest: the skeleton's BAT was rendered from its extents.
    static func layeredDisk(pointer: PluginPointer, pluginPath: String, backup: BackupImageReader,
                            allowOutside: Bool) throws -> any BlockSource {
        let composed = try DiskComposer.compose(volume: backup, composition: pointer.composition)
        guard let r = pointer.reconfiguration else { return composed }
        let path = try resolve(pointerPath: r.layerPath, pluginDirectory: directory(of: absolutePath(pluginPath)),
                               allowOutside: allowOutside)
        let layer: WriteOverlay
        do {
            layer = try WriteOverlay(base: composed, path: path, unitSize: r.unitSize,
                                     baseIdentity: try ReconfigurationLayer.identity(backupHeaderDigest: backup.headerDigest,
                                                                                     composition: pointer.composition),
                                     readOnly: true)
        } catch {
            throw PluginError.mismatch("reconfiguration layer \(path): \(error)")
        }
        guard layer.unitSize == UInt64(r.unitSize) else {
            throw PluginError.mismatch("reconfiguration layer \(path) has \(layer.unitSize)-byte units, the pointer records \(r.unitSize)")
        }
        guard try ReconfigurationLayer.digest(layer) == r.layerDigest else {
            throw PluginError.mismatch("reconfiguration layer \(path) changed since the plugin was rendered (digest differs); expose the backup again (which discards the layer) and reconfigure")
        }
        return layer
    }

    /// Opens the backup a plugin points at and checks it against the pointer.
    static func openVerifiedBackup(pointer: PluginPointer, pluginPath: String, options: OpenOptions) throws -> BackupImageReader {
        let path = try resolve(pointerPath: pointer.backupPath, pluginDirectory: directory(of: absolutePath(pluginPath)),
                               allowOutside: options.allowOutside)
        let backup = try BackupImageReader.open(path: path, passphrase: options.passphrase, vault: options.vault, stats: options.stats)
        guard backup.header.imageID.description == pointer.backupImageID else {
            throw PluginError.mismatch("image ID \(backup.header.imageID) ≠ recorded \(pointer.backupImageID)")
        }
        guard backup.headerDigest.hex == pointer.backupHeaderDigest else {
            throw PluginError.mismatch("header digest differs from the one recorded")
        }
        return backup
    }

    /// The plugin's reconfiguration layer, writable, for the engine: the one the pointer records,
    /// else `<plugin>.reconf` (created if missing). Writes land in the layer only; the plugin must
    /// then be brought up to date with `recordReconfiguration`.
    public static func openReconfigurationLayer(pluginPath: String, options: OpenOptions = OpenOptions()) throws -> ReconfigurationLayerWriter {
        let (pointer, _) = try readPointer(pluginPath: pluginPath)
        let backup = try openVerifiedBackup(pointer: pointer, pluginPath: pluginPath, options: options)
        let composed = try DiskComposer.compose(volume: backup, composition: pointer.composition)
        let path = try layerPath(pointer: pointer, pluginPath: pluginPath, allowOutside: options.allowOutside)
        let overlay = try WriteOverlay(base: composed, path: path, unitSize: ReconfigurationLayer.unitSize,
                                       baseIdentity: try ReconfigurationLayer.identity(backupHeaderDigest: backup.headerDigest,
                                                                                       composition: pointer.composition))
        return ReconfigurationLayerWriter(overlay)
    }

    static func layerPath(pointer: PluginPointer, pluginPath: String, allowOutside: Bool) throws -> String {
        let abs = absolutePath(pluginPath)
        let relative = pointer.reconfiguration?.layerPath
            ?? String(ReconfigurationLayer.defaultPath(forPlugin: abs).split(separator: "/").last!)
        return try resolve(pointerPath: relative, pluginDirectory: directory(of: abs), allowOutside: allowOutside)
    }

    /// Records the plugin's reconfiguration layer in its pointer (path, digest, size, `target`
    /// appended to the targets) and re-renders the skeleton over backup ▸ composed disk ▸ layer:
    /// the layer may turn zero ranges of the backup into data, which changes the BAT (and maybe
    /// the file size), so the skeleton must be rendered again for the served bytes to equal it.
    /// The plugin is replaced atomically (written aside, then renamed); when the pointer already
    /// says exactly this, nothing is written.
    @discardableResult
    public static func recordReconfiguration(pluginPath: String, target: String?, options: OpenOptions = OpenOptions()) throws -> LayerRecord {
        let pluginAbs = absolutePath(pluginPath)
        let (old, _) = try readPointer(pluginPath: pluginAbs)
        let backup = try openVerifiedBackup(pointer: old, pluginPath: pluginAbs, options: options)
        let composed = try DiskComposer.compose(volume: backup, composition: old.composition)
        let path = try layerPath(pointer: old, pluginPath: pluginAbs, allowOutside: options.allowOutside)
        let layer = try WriteOverlay(base: composed, path: path, unitSize: ReconfigurationLayer.unitSize,
                                     baseIdentity: try ReconfigurationLayer.identity(backupHeaderDigest: backup.headerDigest,
                                                                                     composition: old.composition),
                                     readOnly: true)
        var targets = old.reconfiguration?.targets ?? []
        if let target, !targets.contains(target) { targets.append(target) }
        let relative = try old.reconfiguration?.layerPath
            ?? pointerPath(backup: path, pluginDirectory: directory(of: pluginAbs), allowOutside: options.allowOutside)
        var pointer = old
        pointer.reconfiguration = .init(layerPath: relative, layerDigest: try ReconfigurationLayer.digest(layer),
                                        layerBytes: ReconfigurationLayer.heldBytes(layer),
                                        unitSize: UInt32(layer.unitSize), targets: targets)
        // As in expose: the file size and payload start do not depend on the pointer's bytes,
        // but they do depend on the layer's extents; render once to learn them.
        let draft = try VHDXView(source: layer, options: synthesisOptions(pointer, blockSize: old.vhdx.blockSize, pointerBytes: try pointer.encode()))
        pointer.vhdx.fileSize = draft.size
        pointer.vhdx.payloadStart = draft.payloadStart
        let record = { (rewritten: Bool, view: VHDXView) in
            LayerRecord(plugin: pluginPath, layer: path, layerDigest: pointer.reconfiguration!.layerDigest,
                        layerBytes: pointer.reconfiguration!.layerBytes, targets: targets, pluginRewritten: rewritten,
                        vhdxFileSize: view.size, allocatedBlocks: view.allocatedBlockCount)
        }
        if pointer == old { return record(false, draft) }
        let view = try VHDXView(source: layer, options: synthesisOptions(pointer, blockSize: old.vhdx.blockSize, pointerBytes: try pointer.encode()))
        guard view.size == draft.size, view.payloadStart == draft.payloadStart else {
            throw PluginError.refused("internal: the VHDX layout changed with the pointer's contents")
        }
        try writeSkeleton(view, to: pluginAbs)
        return record(true, view)
    }

    /// Writes a plugin file atomically: skeleton, sparse up to the full size, fsync, rename.
    static func writeSkeleton(_ view: VHDXView, to pluginAbs: String) throws {
        let tmp = pluginAbs + ".partial"
        let out = try RawFile.create(path: tmp, size: 0)
        do {
            try out.write(at: 0, try view.skeleton())
            try out.truncate(to: view.size)
            try out.flush()
        } catch {
            unlink(tmp)
            throw error
        }
        guard rename(tmp, pluginAbs) == 0 else { throw IOError("rename", path: pluginAbs, errno: errno) }
    }
}
