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
/// a new kind of file is one new case in `prepare`; the layers themselves are stacked by
/// `Exposure.LayerStack`.
public enum SourceOpener {
    /// Size (cheap, without opening the backing source) and a deferred opener whose result is
    /// the top of the layer stack (faults, counting by `counters`, the spec's overlay).
    ///
    /// A plugin file is parsed once (`PluginFile.recognize`); its size comes from the plugin
    /// alone, and the backup opens inside `open` (then the VHDX view unless `spec.raw`).
    /// `access` says how plugin files are opened (passphrase, vault, --allow-outside); the command
    /// or the nbdkit plugin's configuration passes it.
    public static func prepare(_ spec: SourceSpec, access: PluginFile.OpenOptions, counters: SourceCounters,
                               materializers: MaterializerSet? = nil) throws -> ExposedFile {
        if let plugin = try PluginFile.recognize(path: spec.path, options: access) {
            let m = spec.raw ? nil : try materializers?.materializer(for: plugin, overlayPath: spec.overlayPath)
            let file = prepare(plugin: plugin, spec: spec, counters: counters, materializer: m)
            return m == nil ? file : materializers?.served(file, for: plugin) ?? file
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
        var file = deferred(size: size, spec: spec, counters: counters) { try RawFile(path: spec.path) }
        // Nothing between the file and the reader (read-only, no injected faults): the kernel
        // may read the file itself (FuseMount's passthrough), the source never opening.
        if (st.st_mode & S_IFMT) == S_IFREG, spec.overlayPath == nil, spec.faults.isEmpty {
            file.kernelReadable = KernelReadableFile(path: spec.path, counters: counters)
        }
        return file
    }

    /// A plugin file already recognized (parsed once, by `PluginFile.recognize`): sizes come from
    /// the plugin alone; the backup opens on the first payload read (deferred open), and its
    /// counters join the source's.
    ///
    /// With a `materializer` (`--materialize`), the native file's bytes come through it: filled
    /// ranges from the replacement, the rest from the plugin (`--raw` serves the virtual disk
    /// and takes none).
    public static func prepare(plugin: ExposedImage, spec: SourceSpec, counters: SourceCounters,
                               materializer: Materializer? = nil) -> ExposedFile {
        let stats = plugin.options.stats
        counters.attachBackup {
            let s = stats.snapshot
            return BackupCounts(opens: s.opens, bytesRead: s.bytesRead, blocksDecoded: s.blocksDecoded,
                                cacheHits: s.cacheHits, cacheMisses: s.cacheMisses)
        }
        let size = spec.raw ? plugin.virtualSize : plugin.size
        // The native file may grow (a writer allocates payload units at the end of the file);
        // the raw virtual disk may not (a disk does not grow).
        let limit: UInt64?
        if spec.raw {
            limit = nil
        } else if let vhdx = plugin.pointer.vhdx {
            limit = GrowthLimit.vhdx(fileSize: plugin.size, payloadStart: plugin.payloadStart,
                                     blockSize: UInt64(vhdx.blockSize), virtualSize: plugin.virtualSize)
        } else {
            limit = GrowthLimit.native(fileSize: plugin.size, virtualSize: plugin.virtualSize)
        }
        return deferred(size: size, spec: spec, counters: counters, growthLimit: limit) {
            if spec.raw { return ExposedImage.VirtualDisk(plugin) as any BlockSource }
            return materializer ?? plugin
        }
    }

    /// Wraps a deferred opener of a read-only base with the top of the layer stack
    /// (`LayerStack.served`: byte faults, counting, the spec's overlay).
    ///
    /// With an overlay and a `growthLimit`, the exposed file may grow up to that limit through the
    /// overlay; its announced size is what the overlay's journal records (read without opening the
    /// base), so a grown file keeps its size across remounts and restarts. A journal that cannot
    /// be read announces the base size; opening then reports the journal's error.
    public static func deferred(size: UInt64, spec: SourceSpec, counters: SourceCounters, growthLimit: UInt64? = nil,
                                openBase: @escaping @Sendable () throws -> any BlockSource) -> ExposedFile {
        let limit = spec.overlayPath == nil ? nil : growthLimit.map { max($0, size) }
        var announced = size
        if let overlayPath = spec.overlayPath, limit != nil, let recorded = try? WriteOverlay.recordedSize(path: overlayPath) {
            announced = recorded
        }
        let overlay = spec.overlayPath.map { LayerStack.OverlayRequest(path: $0, unitSize: spec.overlayUnitSize, maxSize: limit) }
        return ExposedFile(size: announced, writable: spec.overlayPath != nil, maxSize: limit) {
            let base = try openBase()
            counters.recordOpen()
            return try LayerStack.served(base, faults: spec.faults, counters: counters, overlay: overlay)
        }
    }
}
