import BackupImage
import BlockCore
import DiskFormats

/// An opened plugin file: the full native VHDX it stands for, as a block source of the VHDX
/// *file's* bytes. Metadata bytes `[0, payloadStart)` come from the plugin file itself; the backup
/// is opened (and checked against the pointer) only when a payload byte is first read.
public final class ExposedImage: BlockSource, VHDXParentIdentity, @unchecked Sendable {
    // @unchecked: immutable after init apart from `opened`, which is behind its lock.
    public let pluginPath: String
    public let pointer: PluginPointer
    /// The skeleton as a VHDX (headers, metadata, BAT), parsed from the plugin file.
    public let skeleton: VHDXFile
    public let options: PluginFile.OpenOptions
    private let plugin: RawFile
    private let opened = Locked<Opened?>(nil)
    /// Serializes the first open: concurrent first reads (nbdkit threads, FUSE workers) must not
    /// each open the backup (each open may run scrypt).
    private let openLock = NSLockish()

    struct Opened: @unchecked Sendable {
        // @unchecked: both are thread-safe block sources, set once.
        let virtualDisk: any BlockSource
        let view: VHDXView
    }

    public var size: UInt64 { pointer.vhdx.fileSize }
    public var payloadStart: UInt64 { pointer.vhdx.payloadStart }
    /// Size of the virtual disk the VHDX describes.
    public var virtualSize: UInt64 { pointer.composition.diskSize }
    public var vhdxDataWriteGuid: GUID { skeleton.header.dataWriteGuid }
    public var vhdxLogicalSectorSize: UInt32? { pointer.vhdx.logicalSectorSize }
    /// True once the backup has been opened.
    public var backupOpened: Bool { opened.withLock { $0 != nil } }

    /// `pointer` and `skeleton` come from the one parse of the plugin file (`PluginFile.recognize`).
    init(pluginPath: String, pointer: PluginPointer, skeleton: VHDXFile, options: PluginFile.OpenOptions) throws {
        self.pluginPath = pluginPath
        self.pointer = pointer
        self.skeleton = skeleton
        self.options = options
        self.plugin = try RawFile(path: pluginPath)
        guard pointer.vhdx.payloadStart <= pointer.vhdx.fileSize, plugin.size >= pointer.vhdx.payloadStart else {
            throw FormatError("plugin file", "plugin pointer", at: 0, "payload start \(pointer.vhdx.payloadStart) lies past the skeleton (\(plugin.size) bytes)")
        }
        // Resolve now so a pointer leading outside the tree is refused before anything is served.
        _ = try backupPath()
    }

    public func backupPath() throws -> String {
        try PluginFile.resolve(pointerPath: pointer.backupPath,
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
        let (disk, view) = try LayerStack.openForServing(pointer: pointer, pluginPath: pluginPath, options: options,
                                                         skeleton: try plugin.read(at: 0, count: Int(pointer.vhdx.payloadStart)))
        return Opened(virtualDisk: disk, view: view)
    }

    /// The virtual disk (the composed disk with the reconfiguration layer, if any), opening the
    /// backup if needed.
    public func virtualDisk() throws -> any BlockSource { try open().virtualDisk }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        let end = offset + UInt64(buffer.count)
        let split = min(max(offset, payloadStart), end)
        if split > offset {
            try plugin.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(split - offset)]))
        }
        if end > split {
            try open().view.read(at: split, into: UnsafeMutableRawBufferPointer(rebasing: buffer[Int(split - offset)...]))
        }
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out: [Extent] = []
        let meta = r.clamped(to: 0..<payloadStart)
        if !meta.isEmpty { out.append(Extent(offset: meta.lowerBound, length: UInt64(meta.count), kind: .data)) }
        let payload = r.clamped(to: payloadStart..<size)
        if !payload.isEmpty { out += try open().view.extents(in: payload) }
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
