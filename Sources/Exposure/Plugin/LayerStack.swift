import BackupImage
import BlockCore
import DiskFormats

/// The one place the layers of an exposed disk are stacked (docs/design.md, "The read path"),
/// bottom to top:
///
///     backup reader            BackupImageReader, checked against the pointer (`checkIdentity`)
///     ▸ composed disk          DiskComposer.compose: synthesized MBR + gap + PatchedSource(volume) + tail
///     ▸ reconfiguration layer  a WriteOverlay over the composed disk (read-only when served)
///     ▸ VHDX view              VHDXView with the pointer's parameters, checked against the skeleton
///     ▸ plugin file bytes      ExposedImage: [0, payloadStart) from the plugin file, the rest from the view
///     ▸ byte faults            FaultInjectionSource (lab fault tests only)
///     ▸ ReadOnly ▸ CountingSource ▸ write overlay    (`served`, for the front-ends)
///
/// Serving (`ExposedImage`), the engine's writable layer, re-rendering after reconfiguration and
/// `expose` all come through here, so a layer added later (a replacement file, another native
/// view) is stacked once, and the identity check exists once.
public enum LayerStack {
    // MARK: The backup

    /// The backup a pointer names must be the one it recorded: the same image ID and the same
    /// header digest (which covers the index digest, so any change of content is caught).
    public static func checkIdentity(of backup: BackupImageReader, against pointer: PluginPointer) throws {
        guard backup.header.imageID.description == pointer.backupImageID else {
            throw PluginFile.PluginError.mismatch(.imageID(recorded: pointer.backupImageID, found: backup.header.imageID.description))
        }
        guard backup.headerDigest.hex == pointer.backupHeaderDigest else {
            throw PluginFile.PluginError.mismatch(.headerDigest(recorded: pointer.backupHeaderDigest, found: backup.headerDigest.hex))
        }
    }

    /// Opens the backup a plugin points at (tree rule enforced) and checks its identity.
    static func openBackup(pointer: PluginPointer, pluginPath: String, options: PluginFile.OpenOptions) throws -> BackupImageReader {
        let path = try PluginFile.resolve(pointerPath: pointer.backupPath,
                                          pluginDirectory: PluginFile.directory(of: PluginFile.absolutePath(pluginPath)),
                                          allowOutside: options.allowOutside)
        let backup = try BackupImageReader.open(path: path, passphrase: options.passphrase, vault: options.vault, stats: options.stats)
        try checkIdentity(of: backup, against: pointer)
        return backup
    }

    // MARK: Below the view

    /// How the reconfiguration layer joins the stack.
    public enum LayerUse: Sendable {
        /// Serving: the layer the pointer records, if any, read-only; its unit size and digest
        /// must be the recorded ones, because the skeleton's BAT was rendered from its extents.
        case recorded
        /// Re-rendering: the layer file as it is now (the pointer's, else `<plugin>.reconf`),
        /// read-only and unchecked — its digest is what is about to be recorded.
        case current
        /// The reconfiguration engine: the same file, writable, created if missing.
        case writable
    }

    /// The layers below the view, opened.
    struct Lower {
        let backup: BackupImageReader
        /// The composed disk (volume patches included).
        let composed: any BlockSource
        /// The reconfiguration layer over it, when stacked, and its resolved path.
        let layer: WriteOverlay?
        let layerPath: String?
        /// The virtual disk: the layer when stacked, else the composed disk.
        var disk: any BlockSource { layer ?? composed }
    }

    /// backup ▸ composed disk ▸ reconfiguration layer (as `use` says).
    static func lower(pointer: PluginPointer, pluginPath: String, options: PluginFile.OpenOptions, layer use: LayerUse) throws -> Lower {
        let backup = try openBackup(pointer: pointer, pluginPath: pluginPath, options: options)
        let composed = try DiskComposer.compose(volume: backup, composition: pointer.composition)
        // A layer is never replayed over another backup or another placement of the volume.
        let identity = try ReconfigurationLayer.identity(backupHeaderDigest: backup.headerDigest, composition: pointer.composition)
        switch use {
        case .recorded:
            guard let r = pointer.reconfiguration else { return Lower(backup: backup, composed: composed, layer: nil, layerPath: nil) }
            let path = try PluginFile.resolve(pointerPath: r.layerPath,
                                              pluginDirectory: PluginFile.directory(of: PluginFile.absolutePath(pluginPath)),
                                              allowOutside: options.allowOutside)
            let layer: WriteOverlay
            do {
                layer = try WriteOverlay(base: composed, path: path, unitSize: r.unitSize, baseIdentity: identity, readOnly: true)
            } catch {
                throw PluginFile.PluginError.mismatch(.layerUnusable(path: path, reason: "\(error)"))
            }
            guard layer.unitSize == UInt64(r.unitSize) else {
                throw PluginFile.PluginError.mismatch(.layerUnitSize(path: path, found: layer.unitSize, recorded: r.unitSize))
            }
            let digest = try ReconfigurationLayer.digest(layer)
            guard digest == r.layerDigest else {
                throw PluginFile.PluginError.mismatch(.layerDigest(path: path, recorded: r.layerDigest, found: digest))
            }
            return Lower(backup: backup, composed: composed, layer: layer, layerPath: path)
        case .current, .writable:
            let path = try PluginFile.layerPath(pointer: pointer, pluginPath: pluginPath, allowOutside: options.allowOutside)
            let layer = try WriteOverlay(base: composed, path: path, unitSize: ReconfigurationLayer.unitSize, baseIdentity: identity,
                                         readOnly: use == .current)
            return Lower(backup: backup, composed: composed, layer: layer, layerPath: path)
        }
    }

    // MARK: The view

    /// The VHDX view of `disk` with the pointer's parameters; the pointer rides in the metadata.
    static func view(over disk: any BlockSource, pointer: PluginPointer, blockSize: UInt32?) throws -> VHDXView {
        var o = VHDXSynthesisOptions()
        o.blockSize = blockSize
        o.logicalSectorSize = pointer.vhdx.logicalSectorSize
        o.physicalSectorSize = pointer.vhdx.physicalSectorSize
        o.seed = [UInt8](hex: pointer.vhdx.seedHex) ?? []
        o.userMetadata = [try pointer.metadataItem()]
        return try VHDXView(source: disk, options: o)
    }

    /// Renders the view of `disk` for a pointer that records the view's own layout (block size,
    /// file size, payload start). The layout does not depend on the pointer's bytes (the metadata
    /// region has a fixed size) but does depend on the disk's extents: render once to learn it,
    /// record it in `pointer`, render again with the final pointer.
    static func renderRecordingLayout(_ pointer: inout PluginPointer, over disk: any BlockSource, blockSize: UInt32?) throws -> VHDXView {
        let draft = try view(over: disk, pointer: pointer, blockSize: blockSize)
        pointer.vhdx.blockSize = draft.blockSize
        pointer.vhdx.fileSize = draft.size
        pointer.vhdx.payloadStart = draft.payloadStart
        let final = try view(over: disk, pointer: pointer, blockSize: draft.blockSize)
        guard final.size == draft.size, final.payloadStart == draft.payloadStart else {
            throw PluginFile.PluginError.unstableLayout(draftFileSize: draft.size, finalFileSize: final.size,
                                                        draftPayloadStart: draft.payloadStart, finalPayloadStart: final.payloadStart)
        }
        return final
    }

    /// What a plugin serves: the whole stack below the plugin file's bytes, with the rendered
    /// view required to equal the skeleton the plugin holds — the bytes served are exactly those
    /// the plugin promised.
    static func openForServing(pointer: PluginPointer, pluginPath: String, options: PluginFile.OpenOptions,
                               skeleton: [UInt8]) throws -> (disk: any BlockSource, view: VHDXView) {
        let lower = try lower(pointer: pointer, pluginPath: pluginPath, options: options, layer: .recorded)
        let view = try view(over: lower.disk, pointer: pointer, blockSize: pointer.vhdx.blockSize)
        guard view.size == pointer.vhdx.fileSize, view.payloadStart == pointer.vhdx.payloadStart else {
            throw PluginFile.PluginError.mismatch(.skeletonLayout(recordedFileSize: pointer.vhdx.fileSize, renderedFileSize: view.size,
                                                                  recordedPayloadStart: pointer.vhdx.payloadStart,
                                                                  renderedPayloadStart: view.payloadStart))
        }
        let rendered = try view.skeleton()
        if rendered != skeleton {
            let at = rendered.indices.first { $0 >= skeleton.count || rendered[$0] != skeleton[$0] } ?? rendered.count
            throw PluginFile.PluginError.mismatch(.skeletonBytes(offset: UInt64(at)))
        }
        return (lower.disk, view)
    }

    // MARK: Above the plugin file

    /// Where a front-end's writes go.
    public struct OverlayRequest: Sendable {
        public var path: String
        public var unitSize: UInt32
        /// The size the exposed file may grow to through the overlay; nil: fixed size.
        public var maxSize: UInt64?
        public init(path: String, unitSize: UInt32, maxSize: UInt64?) {
            self.path = path
            self.unitSize = unitSize
            self.maxSize = maxSize
        }
    }

    /// The top of the stack a front-end serves over `base` (a plugin's VHDX file bytes, its
    /// virtual disk, or a raw image): byte faults (only on a plugin's VHDX file bytes, which is
    /// what `vhdx-byte` names), then the base made read-only and counted — below the overlay, so
    /// the numbers are what the backing source had to deliver — then the write overlay if asked.
    public static func served(_ base: any BlockSource, faults: FaultPlan = .none, counters: SourceCounters,
                              overlay: OverlayRequest?) throws -> any BlockSource {
        var bottom = base
        if faults.corruptsVHDXBytes, let plugin = base as? ExposedImage {
            bottom = FaultInjectionSource(plugin, plan: faults, payloadStart: plugin.payloadStart)
        }
        let counted = CountingSource(ReadOnly(bottom), counters: counters)
        guard let overlay else { return counted }
        return try WriteOverlay(base: counted, path: overlay.path, unitSize: overlay.unitSize, maxSize: overlay.maxSize)
    }
}

/// Hides a source's write side: the base below an overlay is never written, even by mistake.
struct ReadOnly: BlockSource {
    let base: any BlockSource
    init(_ base: any BlockSource) { self.base = base }
    var size: UInt64 { base.size }
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws { try base.read(at: offset, into: buffer) }
    func extents(in range: Range<UInt64>) throws -> [Extent] { try base.extents(in: range) }
}
