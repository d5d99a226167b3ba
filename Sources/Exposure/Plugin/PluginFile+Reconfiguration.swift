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

    /// The plugin's reconfiguration layer, writable, for the engine: the one the pointer records,
    /// else `<plugin>.reconf` (created if missing), over the plugin's composed disk (stacked by
    /// `LayerStack`). Writes land in the layer only; the plugin must then be brought up to date
    /// with `recordReconfiguration`.
    public static func openReconfigurationLayer(pluginPath: String, options: OpenOptions = OpenOptions()) throws -> ReconfigurationLayerWriter {
        let (pointer, _) = try PluginPointer.read(pluginPath: pluginPath)
        let lower = try LayerStack.lower(pointer: pointer, pluginPath: pluginPath, options: options, layer: .writable)
        return ReconfigurationLayerWriter(lower.layer!)
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
        let (old, _) = try PluginPointer.read(pluginPath: pluginAbs)
        let lower = try LayerStack.lower(pointer: old, pluginPath: pluginAbs, options: options, layer: .current)
        let layer = lower.layer!, path = lower.layerPath!
        var targets = old.reconfiguration?.targets ?? []
        if let target, !targets.contains(target) { targets.append(target) }
        let relative = try old.reconfiguration?.layerPath
            ?? pointerPath(backup: path, pluginDirectory: directory(of: pluginAbs), allowOutside: options.allowOutside)
        var pointer = old
        pointer.reconfiguration = .init(layerPath: relative, layerDigest: try ReconfigurationLayer.digest(layer),
                                        layerBytes: ReconfigurationLayer.heldBytes(layer),
                                        unitSize: UInt32(layer.unitSize), targets: targets)
        // The layer's extents may change the BAT and the file size; the payload start and the
        // block size stay.
        let view = try LayerStack.renderRecordingLayout(&pointer, over: layer, allocationUnit: LayerStack.recordedUnit(old))
        let record = LayerRecord(plugin: pluginPath, layer: path, layerDigest: pointer.reconfiguration!.layerDigest,
                                 layerBytes: pointer.reconfiguration!.layerBytes, targets: targets, pluginRewritten: pointer != old,
                                 vhdxFileSize: view.size, allocatedBlocks: try view.allocatedUnitCount())
        if pointer != old { try writeSkeleton(view, to: pluginAbs) }
        return record
    }

    /// Writes a plugin file atomically: skeleton, sparse up to the full size, the trailer (a
    /// VHD footer), fsync, rename.
    static func writeSkeleton(_ view: any NativeFormatView, to pluginAbs: String) throws {
        // A pointer kept beside the file (fixed VHD) is in place before the file that names it.
        if let blob = view.sidecarPointer {
            let side = pluginAbs + ".pointer", sideTmp = side + ".partial"
            let f = try RawFile.create(path: sideTmp, size: 0)
            try f.write(at: 0, blob)
            try f.flush()
            guard rename(sideTmp, side) == 0 else { throw IOError("rename", path: side, errno: errno) }
        }
        let tmp = pluginAbs + ".partial"
        let out = try RawFile.create(path: tmp, size: 0)
        do {
            // Zero 4 KiB runs of the skeleton stay holes (a VMDK plugin's 1 MiB descriptor area).
            let skeleton = try view.skeleton()
            try out.truncate(to: view.size)
            var at = 0, run: Int?
            while at <= skeleton.count {
                let end = min(at + 4096, skeleton.count)
                let data = at < end && skeleton[at..<end].contains { $0 != 0 }
                if data, run == nil { run = at }
                if !data || end == skeleton.count, let r = run {
                    let stop = data ? end : at
                    try out.write(at: UInt64(r), Array(skeleton[r..<stop]))
                    run = nil
                }
                if at == skeleton.count { break }
                at = end
            }
            let trailer = try view.trailer()
            if !trailer.isEmpty { try out.write(at: view.trailerStart, trailer) }
            try out.flush()
        } catch {
            unlink(tmp)
            throw error
        }
        guard rename(tmp, pluginAbs) == 0 else { throw IOError("rename", path: pluginAbs, errno: errno) }
    }
}
