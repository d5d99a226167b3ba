import BlockCore
import Exposure
#if canImport(Glibc)
import Glibc
#endif

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
    /// `--finalize`: once a replacement is complete, finalize it in this process. Read-only, open
    /// handles keep reading the same bytes across the switch (the replacement's inode is the one
    /// renamed into place; the skeleton comes from the old plugin's inode). Writable, the finalize
    /// holds the served file's writers off from the overlay's flush to the rename, then points the
    /// open file at the native file (`WritableSwitchOver`).
    public let finalizeOnCompletion: Bool
    private let all = Locked<[String: Materializer]>([:])
    private let switches = Locked<[String: WritableSwitchOver]>([:])
    private let finalized = Locked<[String: String]>([:])
    /// Tests: finalize on completion waits while this file exists (`mount --finalize-hold`,
    /// hidden), so a test decides when the switch happens; `stopAll` ends the wait.
    public let finalizeHold: String?
    private let stopping = Locked(false)

    public init(options: Materializer.Options, writable: Bool, finalizeOnCompletion: Bool = false, finalizeHold: String? = nil) {
        self.options = options
        self.writable = writable
        self.finalizeOnCompletion = finalizeOnCompletion
        self.finalizeHold = finalizeHold
    }

    /// What finalize on completion did, by plugin path ("finalized" or the error).
    public var finalizations: [String: String] { finalized.current }

    /// The fill of `plugin`, opened and started on first use; nil for the old plugin a finalize
    /// kept (`P.plugin`), which is served as a plugin but never filled (its leftovers from an
    /// interrupted finalize are moved first). `overlayPath`: where the front-end keeps the
    /// plugin's writes (a writable finalize applies them).
    public func materializer(for plugin: ExposedImage, overlayPath: String? = nil) throws -> Materializer? {
        let key = ReplacementPaths(plugin: plugin.pluginPath).plugin
        if let p = Self.finalizedPlugin(ofOldPlugin: key) {
            // A finalize interrupted after its switch: complete it (the overlay and the journal
            // follow the old plugin); one interrupted before is completed by `P`'s own fill.
            // (Not while this process still has a fill of `P`: its own finalize does that.)
            if finalizeOnCompletion, all.withLock({ $0[p] == nil }), Replacement.isFinalized(pluginPath: p) {
                _ = try Replacement.finalize(pluginPath: p)
            }
            return nil
        }
        return try all.withLock { all in
            if let m = all[key] { return m }
            var o = options
            o.releaseLockWhenComplete = !writable
            let m = try Materializer.open(plugin: plugin, options: o)
            all[key] = m
            if finalizeOnCompletion {
                let record = finalized
                let finalize: @Sendable () throws -> Void
                if writable {
                    let live = WritableSwitchOver(materializer: m, overlayPath: overlayPath)
                    switches.withLock { $0[key] = live }
                    finalize = { try live.finalize() }
                } else {
                    let faults = o.faults
                    finalize = { _ = try Replacement.finalize(pluginPath: key, faults: faults) }
                }
                let hold = finalizeHold, stopping = stopping
                m.onComplete.withLock {
                    $0 = {
                        while let hold, access(hold, F_OK) == 0, !stopping.current { usleep(20_000) }
                        do {
                            try finalize()
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

    /// `file` as served for `plugin`: under a writable finalize, opened through its switch-over
    /// (the same file otherwise).
    public func served(_ file: ExposedFile, for plugin: ExposedImage) -> ExposedFile {
        guard let live = switches.withLock({ $0[ReplacementPaths(plugin: plugin.pluginPath).plugin] }) else { return file }
        var out = file
        let open = file.open, limit = file.maxSize
        out.open = { try live.open(maxSize: limit, open) }
        return out
    }

    /// `P` when `path` is `P.plugin`, the name a finalize of `P` gives the old plugin: the native
    /// file is at `P` (switched) or `P` is the same file (linked aside just before the switch).
    static func finalizedPlugin(ofOldPlugin path: String) -> String? {
        guard path.hasSuffix(".plugin") else { return nil }
        let p = String(path.dropLast(".plugin".count))
        guard ReplacementPaths(plugin: p).oldPlugin == path else { return nil }
        var a = stat(), b = stat()
        guard stat(p, &a) == 0, stat(path, &b) == 0 else { return nil }
        return Replacement.isFinalized(pluginPath: p) || (a.st_dev == b.st_dev && a.st_ino == b.st_ino) ? p : nil
    }

    /// Each fill's status; one this process finalized says so (its fill only knows it switched
    /// over: "complete"), with the native file where the replacement was, as `bootlab status` does.
    public var statuses: [MaterializeStatus] {
        let fills = all.current, done = finalized.current
        return fills.keys.sorted().compactMap { key in
            guard var s = fills[key]?.status else { return nil }
            if done[key] == "finalized" {
                s.phase = "finalized"
                s.replacement = key
            }
            return s
        }
    }

    /// Stops every fill (each after its current batch: what is recorded stays recorded).
    public func stopAll() {
        stopping.withLock { $0 = true }
        for m in all.current.values { m.stop() }
    }
}
