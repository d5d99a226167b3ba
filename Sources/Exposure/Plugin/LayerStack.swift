import BackupImage
import BlockCore
import DiskFormats

/// The one place the layers of an exposed disk are stacked (docs/design.md, "The read path"),
/// bottom to top:
///
///     backup reader            BackupImageReader, checked against the pointer (`checkIdentity`),
///                              or an external source (`ExternalSource`: nbdkit, NBD, an image), checked by `SourceIdentity`
///     ▸ composed disk          DiskComposer.compose: synthesized MBR (or GPT: GPTComposedDisk) + gap + PatchedSource(volume) + tail
///     ▸ reconfiguration layer  a WriteOverlay over the composed disk (read-only when served)
///     ▸ native view            the format's view (VHDXView, …) with the pointer's parameters, checked against the skeleton
///     ▸ plugin file bytes      ExposedImage: skeleton and trailer from the plugin file, the rest from the view
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

    /// Opens every member of a volume set (version-3 pointer), each resolved under the tree rule
    /// and checked like a single backup (image ID, then header digest, then the virtual size the
    /// composition was planned with); a member that is missing, another image, or changed is
    /// refused naming it, and nothing is served. Returned by `content` string.
    static func openMembers(_ set: PluginPointer.BackupSetRecord, pluginPath: String,
                            options: PluginFile.OpenOptions) throws -> [String: any BlockSource] {
        let directory = PluginFile.directory(of: PluginFile.absolutePath(pluginPath))
        // One resolution of the passphrase for all members (a terminal prompt asks once).
        var passphrase = options.passphrase
        var out: [String: any BlockSource] = [:]
        for m in set.members {
            let path = try PluginFile.resolve(pointerPath: m.backupPath, pluginDirectory: directory, allowOutside: options.allowOutside)
            let backup: BackupImageReader
            do {
                if let p = passphrase, (try? BackupImageReader.readHeader(path: path))?.header.isEncrypted == true { passphrase = .bytes(try p.resolve()) }
                backup = try BackupImageReader.open(path: path, passphrase: passphrase, vault: options.vault, stats: options.stats)
            } catch {
                throw PluginFile.PluginError.mismatch(.setMember(path: path, reason: "cannot be opened: \(error)"))
            }
            guard backup.header.imageID.description == m.backupImageID else {
                throw PluginFile.PluginError.mismatch(.setMember(path: path, reason: "image ID \(backup.header.imageID) ≠ recorded \(m.backupImageID) (another backup at this path)"))
            }
            guard backup.headerDigest.hex == m.backupHeaderDigest else {
                throw PluginFile.PluginError.mismatch(.setMember(path: path, reason: "header digest differs from the one recorded (the image changed)"))
            }
            guard backup.size == m.size else {
                throw PluginFile.PluginError.mismatch(.setMember(path: path, reason: "virtual size \(backup.size) ≠ recorded \(m.size)"))
            }
            out[m.content] = backup
        }
        return out
    }

    /// What a plugin reads its disk (or volume) from, opened and checked against the pointer,
    /// with the 32 bytes that stand for it in derived identities: a `.bli` backup (its header
    /// digest) or, for a version-2 pointer, an external source — confined first (tree rule,
    /// `--allow-source-plugin`), then started, then its size and sampled digests (and whole
    /// digest, ID) compared with the recorded identity (`SourceIdentity.check`).
    static func openSource(pointer: PluginPointer, pluginPath: String, options: PluginFile.OpenOptions) throws -> (source: (any BlockSource)?, members: [String: any BlockSource], identity: [UInt8]) {
        if let set = pointer.backupSet {
            let members = try openMembers(set, pluginPath: pluginPath, options: options)
            return (nil, members, set.identity)
        }
        guard let record = pointer.source else {
            let backup = try openBackup(pointer: pointer, pluginPath: pluginPath, options: options)
            return (backup, [:], backup.headerDigest)
        }
        let directory = PluginFile.directory(of: PluginFile.absolutePath(pluginPath))
        try record.spec.checkConfinement(pluginDirectory: directory, allowOutside: options.allowOutside,
                                         allowedPlugins: options.allowedSourcePlugins)
        let opened = try options.sourceOpener.map { try $0(record.spec, directory) }
            ?? ExternalSource.open(record.spec, directory: directory, timeout: options.sourceTimeout)
        // Counted as a backup's opens and reads are (front-end statistics, the lab's deferred-open check).
        options.stats.addOpen()
        let source = StatsCountingSource(base: opened, stats: options.stats)
        try record.identity.check(source, name: record.spec.description, expectedID: options.sourceID)
        return (source, [:], record.identity.digestBytes)
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
        /// The backup reader or external source, checked against the pointer (nil for a volume
        /// set, whose members are in the composed disk).
        let backup: (any BlockSource)?
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
        let (backup, members, sourceIdentity) = try openSource(pointer: pointer, pluginPath: pluginPath, options: options)
        var below: (any BlockSource)? = backup
        if options.faults.servesStaleBlock {
            guard let reader = backup as? BackupImageReader else {
                throw FaultPlanError(text: "stale-block", reason: "the plugin's source is not a .bli backup chain")
            }
            below = try StaleBlockSource(reader)
        }
        let composed = try DiskComposer.compose(volume: below, members: members, composition: pointer.composition,
                                                pluginDirectory: PluginFile.directory(of: PluginFile.absolutePath(pluginPath)))
        // A layer is never replayed over another backup or another placement of the volume.
        let identity = try ReconfigurationLayer.identity(backupHeaderDigest: sourceIdentity, composition: pointer.composition)
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

    /// The native view of `disk` with the pointer's parameters; the pointer rides where the
    /// format keeps it (`PluginPointerPlacement`). `allocationUnit` overrides the recorded one
    /// (nil: the pointer's, or the format's default when the pointer has none yet).
    static func view(over disk: any BlockSource, pointer: PluginPointer, allocationUnit: UInt64?) throws -> any NativeFormatView {
        if let vhdx = pointer.vhdx {
            var o = VHDXSynthesisOptions()
            if let u = allocationUnit { o.blockSize = UInt32(clamping: u) }
            o.logicalSectorSize = vhdx.logicalSectorSize
            o.physicalSectorSize = vhdx.physicalSectorSize
            o.seed = [UInt8](hex: vhdx.seedHex) ?? []
            o.userMetadata = [try pointer.metadataItem()]
            return try VHDXView(source: disk, options: o)
        }
        guard let native = pointer.native, let driver = DiskFormatRegistry.driver(named: native.format) else {
            throw FormatError("plugin file", "plugin pointer", at: 0, "format \(pointer.format) is not one this bootlab renders (\(DiskFormatRegistry.names.joined(separator: ", ")))")
        }
        var o = native.options
        if let u = allocationUnit { o.allocationUnit = u }
        return try driver.pluginView(of: disk, options: o, pointer: try pointer.encode())
    }

    /// Renders the view of `disk` for a pointer that records the view's own layout (allocation
    /// unit, file size, payload start, trailer start). The layout does not depend on the
    /// pointer's bytes (every format keeps it in a reserved area of fixed size) but does depend
    /// on the disk's extents: render once to learn it, record it in `pointer`, render again with
    /// the final pointer.
    static func renderRecordingLayout(_ pointer: inout PluginPointer, over disk: any BlockSource,
                                      allocationUnit: UInt64?) throws -> any NativeFormatView {
        let draft = try view(over: disk, pointer: pointer, allocationUnit: allocationUnit)
        if pointer.vhdx != nil {
            pointer.vhdx!.blockSize = UInt32(draft.allocationUnit)
            pointer.vhdx!.fileSize = draft.size
            pointer.vhdx!.payloadStart = draft.payloadStart
        } else {
            pointer.native!.allocationUnit = draft.allocationUnit
            pointer.native!.fileSize = draft.size
            pointer.native!.payloadStart = draft.payloadStart
            pointer.native!.trailerStart = draft.trailerStart
        }
        let final = try view(over: disk, pointer: pointer, allocationUnit: draft.allocationUnit)
        guard final.size == draft.size, final.payloadStart == draft.payloadStart, final.trailerStart == draft.trailerStart else {
            throw PluginFile.PluginError.unstableLayout(draftFileSize: draft.size, finalFileSize: final.size,
                                                        draftPayloadStart: draft.payloadStart, finalPayloadStart: final.payloadStart)
        }
        return final
    }

    /// The allocation unit a pointer records.
    static func recordedUnit(_ pointer: PluginPointer) -> UInt64 {
        pointer.vhdx.map { UInt64($0.blockSize) } ?? pointer.native?.allocationUnit ?? 0
    }

    /// What a plugin serves: the whole stack below the plugin file's bytes, with the rendered
    /// view required to equal the skeleton (and trailer) the plugin holds — the bytes served are
    /// exactly those the plugin promised.
    static func openForServing(pointer: PluginPointer, pluginPath: String, options: PluginFile.OpenOptions,
                               skeleton: [UInt8], trailer: [UInt8]) throws -> (disk: any BlockSource, view: any NativeFormatView) {
        let lower = try lower(pointer: pointer, pluginPath: pluginPath, options: options, layer: .recorded)
        let view = try view(over: lower.disk, pointer: pointer, allocationUnit: recordedUnit(pointer))
        guard view.size == pointer.fileSize, view.payloadStart == pointer.payloadStart, view.trailerStart == pointer.trailerStart else {
            throw PluginFile.PluginError.mismatch(.skeletonLayout(format: pointer.format, recordedFileSize: pointer.fileSize, renderedFileSize: view.size,
                                                                  recordedPayloadStart: pointer.payloadStart,
                                                                  renderedPayloadStart: view.payloadStart))
        }
        let rendered = try view.skeleton()
        if rendered != skeleton {
            let at = rendered.indices.first { $0 >= skeleton.count || rendered[$0] != skeleton[$0] } ?? rendered.count
            throw PluginFile.PluginError.mismatch(.skeletonBytes(format: pointer.format, offset: UInt64(at)))
        }
        let renderedTrailer = try view.trailer()
        if renderedTrailer != trailer {
            let at = renderedTrailer.indices.first { $0 >= trailer.count || renderedTrailer[$0] != trailer[$0] } ?? renderedTrailer.count
            throw PluginFile.PluginError.mismatch(.skeletonBytes(format: pointer.format, offset: view.trailerStart + UInt64(at)))
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
            let sites = try DiskFormatRegistry.driver(named: plugin.formatName)?.structureSites(path: plugin.pluginPath) ?? [:]
            bottom = FaultInjectionSource(plugin, plan: faults, payloadStart: plugin.payloadStart,
                                          structures: try FaultInjectionSource.resolve(faults, sites: sites, format: plugin.formatName))
        }
        let counted = CountingSource(ReadOnly(bottom), counters: counters)
        guard let overlay else { return counted }
        let top = try WriteOverlay(base: counted, path: overlay.path, unitSize: overlay.unitSize, maxSize: overlay.maxSize)
        if faults.dropsPayloadWrite { top.injectDroppedWrite(atOrAfter: (base as? ExposedImage)?.payloadStart ?? 0) }
        return top
    }
}

/// Counts an external source's reads in the backup statistics.
struct StatsCountingSource: BlockSource {
    let base: any BlockSource
    let stats: BackupStats
    var size: UInt64 { base.size }
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try base.read(at: offset, into: buffer)
        stats.addBytesRead(buffer.count)
    }
    func extents(in range: Range<UInt64>) throws -> [Extent] { try base.extents(in: range) }
}

/// Hides a source's write side: the base below an overlay is never written, even by mistake.
/// Bytes pass unchanged, so a file-backed base stays file-backed (FUSE splices them).
struct ReadOnly: FileBackedSource {
    let base: any BlockSource
    init(_ base: any BlockSource) { self.base = base }
    var size: UInt64 { base.size }
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws { try base.read(at: offset, into: buffer) }
    func extents(in range: Range<UInt64>) throws -> [Extent] { try base.extents(in: range) }
    func fileSpans(in range: Range<UInt64>) -> [FileSpan]? { (base as? any FileBackedSource)?.fileSpans(in: range) }
}
