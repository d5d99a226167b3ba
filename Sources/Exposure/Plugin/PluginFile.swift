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
        case mismatch(String)
        case refused(String)

        public var description: String {
            switch self {
            case .notAPlugin(let p): return "\(p) is not a BootLab plugin file (no plugin pointer in its VHDX metadata)"
            case let .outsideTree(plugin, backup):
                return "the backup \(backup) lies outside the plugin's directory tree (\(plugin)); pass --allow-outside to permit it"
            case .mismatch(let s): return "the backup does not match the plugin file: \(s); nothing is served"
            case .refused(let s): return s
            }
        }
    }

    public struct ExposeOptions: Sendable {
        public var composer = DiskComposer.Options()
        public var blockSize: UInt32?
        public var allowOutside = false
        public var passphrase: PassphraseSource?
        public var vault: String?
        public init() {}
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
        public var vhdxFileSize: UInt64
        public var payloadStart: UInt64
        public var blockSize: UInt32
        public var allocatedBlocks: UInt64
    }

    // MARK: Expose

    /// Writes `pluginPath` for the backup at `backupPath`: the VHDX skeleton of the exposed disk
    /// plus the pointer, sparse up to the full VHDX size. The backup is opened read-only.
    @discardableResult
    public static func expose(backupPath: String, pluginPath: String, options: ExposeOptions) throws -> ExposeReport {
        let pluginAbs = absolutePath(pluginPath)
        let backupAbs = absolutePath(backupPath)
        guard realPathOrSelf(pluginAbs) != realPathOrSelf(backupAbs) else {
            throw PluginError.refused("refusing to write the plugin file over the backup itself")
        }
        let pointerPath = try pointerPath(backup: backupAbs, pluginDirectory: directory(of: pluginAbs), allowOutside: options.allowOutside)
        let backup = try BackupImageReader.open(path: backupAbs, passphrase: options.passphrase, vault: options.vault)
        let composition = try DiskComposer.plan(header: backup.header, volume: backup, options: options.composer)
        let disk = try DiskComposer.compose(volume: backup, composition: composition)

        // The pointer records the view's file size and payload start, which do not depend on the
        // pointer's own bytes (the metadata region has a fixed size): render once to learn them.
        var pointer = PluginPointer(backupPath: pointerPath, backupImageID: backup.header.imageID.description,
                                    backupHeaderDigest: backup.headerDigest.hex, composition: composition,
                                    vhdx: .init(blockSize: 0, logicalSectorSize: 512, physicalSectorSize: 512,
                                                seedHex: seed(for: backup).hex, fileSize: 0, payloadStart: 0))
        let draft = try VHDXView(source: disk, options: synthesisOptions(pointer, blockSize: options.blockSize, pointerBytes: try pointer.encode()))
        pointer.vhdx.blockSize = draft.blockSize
        pointer.vhdx.fileSize = draft.size
        pointer.vhdx.payloadStart = draft.payloadStart
        let view = try VHDXView(source: disk, options: synthesisOptions(pointer, blockSize: draft.blockSize, pointerBytes: try pointer.encode()))
        guard view.size == draft.size, view.payloadStart == draft.payloadStart else {
            throw PluginError.refused("internal: the VHDX layout changed with the pointer's contents")
        }

        try writeSkeleton(view, to: pluginAbs)
        // A reconfiguration layer beside the plugin belonged to the plugin just replaced, whose
        // pointer recorded it; the new plugin starts without one (`bootlab reconfigure` makes it).
        let layer = ReconfigurationLayer.defaultPath(forPlugin: pluginAbs)
        unlink(layer)
        unlink(layer + ".map")
        return ExposeReport(plugin: pluginPath, backup: backupPath, backupPathInPlugin: pointerPath,
                            composition: composition.kind, partitionStartLBA: composition.partitionStartLBA,
                            patchedBytes: composition.volumePatches.reduce(0) { $0 + $1.bytes.count },
                            virtualSize: disk.size, vhdxFileSize: view.size, payloadStart: view.payloadStart,
                            blockSize: view.blockSize, allocatedBlocks: view.allocatedBlockCount)
    }

    static func synthesisOptions(_ p: PluginPointer, blockSize: UInt32?, pointerBytes: [UInt8]) -> VHDXSynthesisOptions {
        var o = VHDXSynthesisOptions()
        o.blockSize = blockSize
        o.logicalSectorSize = p.vhdx.logicalSectorSize
        o.physicalSectorSize = p.vhdx.physicalSectorSize
        o.seed = [UInt8](hex: p.vhdx.seedHex) ?? []
        o.userMetadata = [VHDXUserMetadataItem(id: PluginPointer.itemID, bytes: pointerBytes)]
        return o
    }

    /// GUIDs of the exposed VHDX derive from the backup's identity: same backup, same bytes.
    static func seed(for backup: BackupImageReader) -> [UInt8] {
        Array(SHA256.hash(backup.header.imageID.bytes + backup.headerDigest).prefix(16))
    }

    // MARK: Open

    /// Opens a plugin file without opening the backup.
    public static func open(pluginPath: String, options: OpenOptions = OpenOptions()) throws -> PluginDisk {
        try PluginDisk(pluginPath: pluginPath, options: options)
    }

    public struct OpenOptions: Sendable {
        public var passphrase: PassphraseSource?
        public var vault: String?
        public var allowOutside = false
        public var stats = BackupStats()
        public init() {}
    }

    /// Cheap test: is this file a plugin file (a VHDX carrying our pointer)?
    public static func isPlugin(path: String) -> Bool {
        (try? readPointer(pluginPath: path)) != nil
    }

    static func readPointer(pluginPath: String) throws -> (PluginPointer, VHDXFile) {
        let vhdx = try VHDXFile.open(path: pluginPath)
        guard let item = vhdx.metadata.userItems.first(where: { $0.itemID == PluginPointer.itemID }) else {
            throw PluginError.notAPlugin(pluginPath)
        }
        return (try PluginPointer.decode(item.data), vhdx)
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

    static func absolutePath(_ p: String) -> String {
        if p.hasPrefix("/") { return p }
        return FileManager.default.currentDirectoryPath + "/" + p
    }

    static func directory(of p: String) -> String {
        guard let slash = p.lastIndex(of: "/") else { return "." }
        return slash == p.startIndex ? "/" : String(p[..<slash])
    }

    static func realPathOrSelf(_ p: String) -> String {
        guard let r = realpath(p, nil) else { return p }
        defer { free(r) }
        return String(cString: r)
    }
}
