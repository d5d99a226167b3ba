import BlockCore
import Exposure

/// The replacement fills of a front-end (`bootlab mount --materialize`): one `Materializer` per
/// served plugin, started when the plugin is first recognized and stopped when the front-end
/// ends; served reads go through it (filled ranges from the replacement, the rest from the
/// backup). See docs/replacement-file.md.
public final class MaterializerSet: Sendable {
    public let options: Materializer.Options
    /// A writable front-end keeps the materialization lock after the fill completes, so
    /// `bootlab finalize` cannot apply the overlay while writes still arrive; a read-only one
    /// releases it, so finalize can switch files under a running VM.
    public let writable: Bool
    private let all = Locked<[String: Materializer]>([:])

    public init(options: Materializer.Options, writable: Bool) {
        self.options = options
        self.writable = writable
    }

    /// The fill of `plugin`, opened and started on first use.
    public func materializer(for plugin: ExposedImage) throws -> Materializer {
        let key = ReplacementPaths(plugin: plugin.pluginPath).plugin
        return try all.withLock { all in
            if let m = all[key] { return m }
            var o = options
            o.releaseLockWhenComplete = !writable
            let m = try Materializer.open(plugin: plugin, options: o)
            all[key] = m
            m.start()
            return m
        }
    }

    public var statuses: [MaterializeStatus] {
        all.current.keys.sorted().compactMap { all.current[$0]?.status }
    }

    /// Stops every fill (each after its current batch: what is recorded stays recorded).
    public func stopAll() {
        for m in all.current.values { m.stop() }
    }
}
