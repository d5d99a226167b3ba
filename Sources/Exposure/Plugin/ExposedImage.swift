import BackupImage
import BlockCore
import DiskFormats

/// An opened plugin file: the full native disk file it stands for (VHDX, VMDK, …), as a block
/// source of the *file's* bytes. Metadata bytes — the skeleton `[0, payloadStart)` and the trailer
/// `[trailerStart, size)` — come from the plugin file itself; the backup is opened (and checked
/// against the pointer) only when a payload byte is first read.
public final class ExposedImage: BlockSource, VHDXParentIdentity, @unchecked Sendable {
    // @unchecked: immutable after init apart from `opened`, which is behind its lock.
    public let pluginPath: String
    public let pointer: PluginPointer
    /// A VHDX plugin's skeleton (headers, metadata, BAT), parsed from the plugin file; nil for
    /// other formats.
    public let skeleton: VHDXFile?
    public let options: PluginFile.OpenOptions
    private let plugin: RawFile
    private let opened = Locked<Opened?>(nil)
    /// Serializes the first open: concurrent first reads (nbdkit threads, FUSE workers) must not
    /// each open the backup (each open may run scrypt).
    private let openLock = NSLockish()

    struct Opened: @unchecked Sendable {
        // @unchecked: both are thread-safe block sources, set once.
        let virtualDisk: any BlockSource
        let view: any NativeFormatView
    }

    /// The native format served ("vhdx", "vmdk", …).
    public var formatName: String { pointer.format }
    public var size: UInt64 { pointer.fileSize }
    public var payloadStart: UInt64 { pointer.payloadStart }
    public var trailerStart: UInt64 { pointer.trailerStart }
    /// Size of the virtual disk the VHDX describes.
    public var virtualSize: UInt64 { pointer.composition.diskSize }
    /// Only VHDX plugins are VHDX parents; another format's plugin has no DataWriteGuid (zero).
    public var vhdxDataWriteGuid: GUID { skeleton?.header.dataWriteGuid ?? GUID(bytes: [UInt8](repeating: 0, count: 16)) }
    public var vhdxLogicalSectorSize: UInt32? { pointer.vhdx?.logicalSectorSize ?? pointer.native?.logicalSectorSize }
    /// True once the backup has been opened.
    public var backupOpened: Bool { opened.withLock { $0 != nil } }

    /// `pointer` and `skeleton` come from the one parse of the plugin file (`PluginFile.recognize`).
    init(pluginPath: String, pointer: PluginPointer, skeleton: VHDXFile?, options: PluginFile.OpenOptions) throws {
        self.pluginPath = pluginPath
        self.pointer = pointer
        self.skeleton = skeleton
        self.options = options
        self.plugin = try RawFile(path: pluginPath)
        guard pointer.payloadStart <= pointer.fileSize, plugin.size >= pointer.payloadStart else {
            throw FormatError("plugin file", "plugin pointer", at: 0, "payload start \(pointer.payloadStart) lies past the skeleton (\(plugin.size) bytes)")
        }
        guard plugin.size >= pointer.fileSize else {
            throw FormatError("plugin file", "plugin pointer", at: 0, "the plugin file has \(plugin.size) bytes, its pointer records \(pointer.fileSize)")
        }
        // Resolve now so a pointer leading outside the tree (or running a program not allowed)
        // is refused before anything is served.
        if let record = pointer.source {
            try record.spec.checkConfinement(pluginDirectory: PluginFile.directory(of: PluginFile.absolutePath(pluginPath)),
                                             allowOutside: options.allowOutside, allowedPlugins: options.allowedSourcePlugins)
        } else if pointer.backupSet != nil {
            _ = try memberBackupPaths()
        } else {
            _ = try backupPath()
        }
    }

    /// The `.bli` images the plugin reads: its backup, or every member of its volume set.
    public func memberBackupPaths() throws -> [String] {
        guard let set = pointer.backupSet else { return [try backupPath()] }
        let directory = PluginFile.directory(of: PluginFile.absolutePath(pluginPath))
        return try set.members.map { try PluginFile.resolve(pointerPath: $0.backupPath, pluginDirectory: directory, allowOutside: options.allowOutside) }
    }

    /// The external source the plugin reads, when it is not a `.bli` backup (version-2 pointer).
    public var externalSource: BackupSourceSpec? { pointer.source?.spec }

    /// The `.bli` backup's path (a plugin over an external source has none: `externalSource`).
    public func backupPath() throws -> String {
        if let spec = externalSource {
            throw SourceError.badSpec(spec: spec.description, reason: "this plugin reads an external source, not a backup image file")
        }
        if pointer.backupSet != nil {
            throw FormatError("plugin file", "plugin pointer", at: 0, "this plugin reads a volume set (several backup images: memberBackupPaths), not one backup image")
        }
        return try PluginFile.resolve(pointerPath: pointer.backupPath,
                               pluginDirectory: PluginFile.directory(of: PluginFile.absolutePath(pluginPath)),
                               allowOutside: options.allowOutside)
    }

    /// Opens the backup, verifies it against the pointer, and renders the view (once).
    func open() throws -> Opened {
        if let o = opened.withLock({ $0 }) { return o }
        return try openLock.withLock {
            if let o = opened.withLock({ $0 }) { return o }
            let o = try openBackup()
            opened.withLock { $0 = o }
            return o
        }
    }

    private func openBackup() throws -> Opened {
        let (disk, view) = try LayerStack.openForServing(
            pointer: pointer, pluginPath: pluginPath, options: options,
            skeleton: try plugin.read(at: 0, count: Int(pointer.payloadStart)),
            trailer: try plugin.read(at: pointer.trailerStart, count: Int(pointer.fileSize - pointer.trailerStart)))
        return Opened(virtualDisk: disk, view: view)
    }

    /// The virtual disk (the composed disk with the reconfiguration layer, if any), opening the
    /// backup if needed.
    public func virtualDisk() throws -> any BlockSource { try open().virtualDisk }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        let end = offset + UInt64(buffer.count)
        // Three ranges: skeleton and trailer from the plugin file, payload from the view.
        let a = min(max(offset, payloadStart), end)
        let b = min(max(a, trailerStart), end)
        if a > offset {
            try plugin.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(a - offset)]))
        }
        if b > a {
            try open().view.read(at: a, into: UnsafeMutableRawBufferPointer(rebasing: buffer[Int(a - offset)..<Int(b - offset)]))
        }
        if end > b {
            try plugin.read(at: b, into: UnsafeMutableRawBufferPointer(rebasing: buffer[Int(b - offset)...]))
        }
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out: [Extent] = []
        let meta = r.clamped(to: 0..<payloadStart)
        if !meta.isEmpty { out.append(Extent(offset: meta.lowerBound, length: UInt64(meta.count), kind: .data)) }
        let payload = r.clamped(to: payloadStart..<trailerStart)
        if !payload.isEmpty { out += try open().view.extents(in: payload) }
        let tail = r.clamped(to: trailerStart..<size)
        if !tail.isEmpty { out.append(Extent(offset: tail.lowerBound, length: UInt64(tail.count), kind: .data)) }
        return coalesce(out)
    }
}

extension ExposedImage {
    /// The plugin's virtual disk as a VHDX parent: the composed disk's bytes (opening the backup
    /// on first read) with the skeleton's DataWriteGuid, which children record as parent_linkage.
    public struct VirtualDisk: BlockSource, VHDXParentIdentity {
        public let plugin: ExposedImage
        public init(_ plugin: ExposedImage) { self.plugin = plugin }
        public var size: UInt64 { plugin.virtualSize }
        public var vhdxDataWriteGuid: GUID { plugin.vhdxDataWriteGuid }
        public var vhdxLogicalSectorSize: UInt32? { plugin.vhdxLogicalSectorSize }
        public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
            try checkRange(offset, buffer.count)
            try plugin.virtualDisk().read(at: offset, into: buffer)
        }
        public func extents(in range: Range<UInt64>) throws -> [Extent] { try plugin.virtualDisk().extents(in: range) }
    }

    /// Plugin files as VHDX parents, for `VHDXFile.open(path:parentResolver:)`: a child made by
    /// `create -b vm.vhdx` reads its parent's virtual disk through the plugin (opened with
    /// `options`), not the plugin's hole.
    public static func vhdxParentResolver(options: PluginFile.OpenOptions) -> VHDXParentResolver {
        { path in try PluginFile.recognize(path: path, options: options).map(VirtualDisk.init) }
    }
}
