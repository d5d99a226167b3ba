import BlockCore
import Exposure
#if canImport(Glibc)
import Glibc
#endif

/// What a front-end was asked to serve, as given on the command line or in nbdkit's config.
public struct SourceSpec: Sendable, Equatable {
    /// The file named by the user (a raw image today; a plugin file once the exposure layer lands).
    public var path: String
    /// Serve the raw virtual disk rather than the native format's bytes (`--raw`).
    public var raw: Bool
    /// Where writes go (`--overlay`); nil serves read-only.
    public var overlayPath: String?
    public var overlayUnitSize: UInt32

    public init(path: String, raw: Bool = false, overlayPath: String? = nil,
                overlayUnitSize: UInt32 = WriteOverlay.defaultUnitSize) {
        self.path = path
        self.raw = raw
        self.overlayPath = overlayPath
        self.overlayUnitSize = overlayUnitSize
    }
}

/// The one place that turns a named file into something a front-end serves. `bootlab mount`
/// (through `MountCatalog`), `bootlab serve` and the nbdkit plugin all come through here, so adding
/// a new kind of file (the plugin file → synthesized VHDX, or its raw disk with `raw`) is one new
/// case in `prepare`.
public enum SourceOpener {
    /// Size (cheap, without opening the backing source) and a deferred opener whose result is
    /// counted by `counters` and, with an overlay, wrapped by a `WriteOverlay`.
    ///
    /// Extension point for the exposure layer: recognise a plugin file here, take the size from
    /// the plugin alone, and open the backup (then the VHDX view unless `spec.raw`) inside `open`.
    public static func prepare(_ spec: SourceSpec, counters: SourceCounters) throws -> ExposedFile {
        if PluginFile.isPlugin(path: spec.path) {
            let plugin = try PluginFile.open(pluginPath: spec.path, options: pluginOpenOptions.current)
            // A plugin file: sizes come from the plugin alone; the backup opens on the first
            // payload read (deferred open), and its counters join the source's.
            let stats = plugin.options.stats
            counters.attachBackup {
                let s = stats.snapshot
                return BackupCounts(opens: s.opens, bytesRead: s.bytesRead, blocksDecoded: s.blocksDecoded,
                                    cacheHits: s.cacheHits, cacheMisses: s.cacheMisses)
            }
            let size = spec.raw ? plugin.virtualSize : plugin.size
            return deferred(size: size, spec: spec, counters: counters) {
                spec.raw ? PluginDisk.VirtualDisk(plugin) as any BlockSource : plugin
            }
        }
        // Anything else is served as a raw image (identical for --raw and native).
        var st = stat()
        guard stat(spec.path, &st) == 0 else { throw IOError("stat", path: spec.path, errno: errno) }
        let size: UInt64
        if (st.st_mode & S_IFMT) == S_IFBLK {
            size = try RawFile(path: spec.path).size
        } else {
            size = UInt64(st.st_size)
        }
        return deferred(size: size, spec: spec, counters: counters) { try RawFile(path: spec.path) }
    }

    /// Wraps a deferred opener of a read-only base with counting and the spec's overlay.
    public static func deferred(size: UInt64, spec: SourceSpec, counters: SourceCounters,
                                openBase: @escaping @Sendable () throws -> any BlockSource) -> ExposedFile {
        let overlayPath = spec.overlayPath
        let unit = spec.overlayUnitSize
        return ExposedFile(size: size, writable: overlayPath != nil) {
            let base = try openBase()
            counters.recordOpen()
            // Count below the overlay: the numbers are what the backing source had to deliver.
            let counted = CountingSource(ReadOnly(base), counters: counters)
            guard let overlayPath else { return counted }
            return try WriteOverlay(base: counted, path: overlayPath, unitSize: unit)
        }
    }
}

/// How plugin files are opened (passphrase, vault, --allow-outside); set once by the command
/// before serving starts.
public let pluginOpenOptions = Locked(PluginFile.OpenOptions())

/// Hides a source's write side: the base below an overlay is never written, even by mistake.
struct ReadOnly: BlockSource {
    let base: any BlockSource
    init(_ base: any BlockSource) { self.base = base }
    var size: UInt64 { base.size }
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws { try base.read(at: offset, into: buffer) }
    func extents(in range: Range<UInt64>) throws -> [Extent] { try base.extents(in: range) }
}
