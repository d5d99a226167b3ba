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
    /// `--finalize`: once a replacement is complete, finalize it in this process (read-only
    /// front-ends only: a writable one keeps its writes in the overlay until it stops). Open
    /// handles keep reading the same bytes across the switch (the replacement's inode is the
    /// one renamed into place; the skeleton comes from the old plugin's inode).
    public let finalizeOnCompletion: Bool
    private let all = Locked<[String: Materializer]>([:])
    private let finalized = Locked<[String: String]>([:])

    public init(options: Materializer.Options, writable: Bool, finalizeOnCompletion: Bool = false) {
        precondition(!(writable && finalizeOnCompletion), "finalize on completion is for read-only front-ends")
        self.options = options
        self.writable = writable
        self.finalizeOnCompletion = finalizeOnCompletion
    }

    /// What finalize on completion did, by plugin path ("finalized" or the error).
    public var finalizations: [String: String] { finalized.current }

    /// The fill of `plugin`, opened and started on first use.
    public func materializer(for plugin: ExposedImage) throws -> Materializer {
        let key = ReplacementPaths(plugin: plugin.pluginPath).plugin
        return try all.withLock { all in
            if let m = all[key] { return m }
            var o = options
            o.releaseLockWhenComplete = !writable
            let m = try Materializer.open(plugin: plugin, options: o)
            all[key] = m
            if finalizeOnCompletion {
                let record = finalized
                m.onComplete.withLock {
                    $0 = {
                        do {
                            _ = try Replacement.finalize(pluginPath: key)
                            record.withLock { $0[key] = "finalized" }
                        } catch {
                            record.withLock { $0[key] = "\(error)" }
                            writeStandardError("bootlab: finalize \(key): \(error)\n")
                        }
                    }
                }
            }
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
