import BlockCore
import Exposure

/// Decides, for `bootlab mount`, which names of the mount are exposed files and how each opens.
///
/// Names given explicitly (`--expose NAME=FILE`) serve FILE; any other backing file that
/// `PluginFile.recognize`s (the plugin files) is served from itself; the rest pass through. With `writable`, each exposed NAME takes writes into
/// `overlayDirectory/NAME.overlay` (+ `.map`), beside the plugin by default.
public struct MountCatalog: Sendable {
    public var backingDirectory: String
    public var explicit: [String: String]
    public var writable: Bool
    public var overlayDirectory: String
    public var raw: Bool
    /// How plugin files are opened (passphrase, vault, --allow-outside).
    public var access: PluginFile.OpenOptions
    /// Deliberate corruption of served VHDX bytes (`--inject-fault`, lab fault tests only).
    public var faults: FaultPlan
    public let reporter: StatsReporter
    /// With `--materialize`: the replacement fills, and plugins are served through them.
    public var materializers: MaterializerSet?
    private let counters = Locked([String: SourceCounters]())

    public init(backingDirectory: String, explicit: [String: String] = [:], writable: Bool = false,
                overlayDirectory: String? = nil, raw: Bool = false, access: PluginFile.OpenOptions = .init(),
                faults: FaultPlan = .none, reporter: StatsReporter, materializers: MaterializerSet? = nil) {
        self.backingDirectory = absolutePath(backingDirectory)
        self.explicit = explicit.mapValues(absolutePath)
        self.writable = writable
        self.overlayDirectory = absolutePath(overlayDirectory ?? backingDirectory)
        self.raw = raw
        self.access = access
        self.faults = faults
        self.reporter = reporter
        self.materializers = materializers
    }

    /// Names to list although no backing file has them.
    public var extraNames: [String] { explicit.keys.sorted() }

    public func counters(for name: String) -> SourceCounters {
        counters.withLock { all in
            if let c = all[name] { return c }
            let c = SourceCounters(name: name)
            all[name] = c
            reporter.add(c)
            return c
        }
    }

    /// The file served as `name`, or nil to pass the backing file through. A backing file is
    /// parsed once here (recognized and opened in one step), not once to recognize it and again
    /// to serve it.
    public func exposedFile(named name: String) throws -> ExposedFile? {
        let overlayName = name.replacingOccurrences(of: "/", with: "_") + ".overlay"
        func spec(_ path: String) -> SourceSpec {
            SourceSpec(path: path, raw: raw, overlayPath: writable ? overlayDirectory + "/" + overlayName : nil, faults: faults)
        }
        if let e = explicit[name] {
            return try SourceOpener.prepare(spec(e), access: access, counters: counters(for: name), materializers: materializers)
        }
        // Only plugin files (a VHDX carrying BootLab's pointer; only the plugin's own metadata is
        // read) are served without being named explicitly.
        let backing = backingDirectory + "/" + name
        guard let plugin = try PluginFile.recognize(path: backing, options: access) else { return nil }
        let served = spec(backing)
        let m = try materializers?.materializer(for: plugin, overlayPath: served.overlayPath)
        let file = SourceOpener.prepare(plugin: plugin, spec: served, counters: counters(for: name), materializer: m)
        return m == nil ? file : materializers?.served(file, for: plugin) ?? file
    }

    public var provider: @Sendable (String) throws -> ExposedFile? {
        let me = self
        return { try me.exposedFile(named: $0) }
    }
}
