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
    /// Deliberate corruption of the served VHDX bytes (`--inject-fault`, lab fault tests only).
    public var faults: FaultPlan

    public init(path: String, raw: Bool = false, overlayPath: String? = nil,
                overlayUnitSize: UInt32 = WriteOverlay.defaultUnitSize, faults: FaultPlan = .none) {
        self.path = path
        self.raw = raw
        self.overlayPath = overlayPath
        self.overlayUnitSize = overlayUnitSize
        self.faults = faults
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
    /// `access` says how plugin files are opened (passphrase, vault, --allow-outside); the command
    /// or the nbdkit plugin's configuration passes it.
    public static func prepare(_ spec: SourceSpec, access: PluginFile.OpenOptions, counters: SourceCounters) throws -> ExposedFile {
        if PluginFile.isPlugin(path: spec.path) {
            let plugin = try PluginFile.open(pluginPath: spec.path, options: access)
            // A plugin file: sizes come from the plugin alone; the backup opens on the first
            // payload read (deferred open), and its counters join the source's.
            let stats = plugin.options.stats
            counters.attachBackup {
                let s = stats.snapshot
                return BackupCounts(opens: s.opens, bytesRead: s.bytesRead, blocksDecoded: s.blocksDecoded,
                                    cacheHits: s.cacheHits, cacheMisses: s.cacheMisses)
            }
            let size = spec.raw ? plugin.virtualSize : plugin.size
            // The VHDX file may grow (a VHDX writer allocates payload blocks at the end of the
            // file); the raw virtual disk may not (a disk does not grow).
            let limit = spec.raw ? nil : GrowthLimit.vhdx(fileSize: plugin.size, payloadStart: plugin.payloadStart,
                                                          blockSize: UInt64(plugin.pointer.vhdx.blockSize),
                                                          virtualSize: plugin.virtualSize)
            return deferred(size: size, spec: spec, counters: counters, growthLimit: limit) {
                if spec.raw { return PluginDisk.VirtualDisk(plugin) }
                // Byte faults corrupt the VHDX file's bytes, as a wrong synthesizer would.
                guard spec.faults.corruptsVHDXBytes else { return plugin }
                return FaultInjectionSource(plugin, plan: spec.faults, payloadStart: plugin.payloadStart)
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
    ///
    /// With an overlay and a `growthLimit`, the exposed file may grow up to that limit through the
    /// overlay; its announced size is what the overlay's journal records (read without opening the
    /// base), so a grown file keeps its size across remounts and restarts. A journal that cannot
    /// be read announces the base size; opening then reports the journal's error.
    public static func deferred(size: UInt64, spec: SourceSpec, counters: SourceCounters, growthLimit: UInt64? = nil,
                                openBase: @escaping @Sendable () throws -> any BlockSource) -> ExposedFile {
        let overlayPath = spec.overlayPath
        let unit = spec.overlayUnitSize
        let limit = overlayPath == nil ? nil : growthLimit.map { max($0, size) }
        var announced = size
        if let overlayPath, limit != nil, let recorded = try? WriteOverlay.recordedSize(path: overlayPath) {
            announced = recorded
        }
        return ExposedFile(size: announced, writable: overlayPath != nil, maxSize: limit) {
            let base = try openBase()
            counters.recordOpen()
            // Count below the overlay: the numbers are what the backing source had to deliver.
            let counted = CountingSource(ReadOnly(base), counters: counters)
            guard let overlayPath else { return counted }
            return try WriteOverlay(base: counted, path: overlayPath, unitSize: unit, maxSize: limit)
        }
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
