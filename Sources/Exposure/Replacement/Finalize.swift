import BlockCore
import DiskFormats
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `bootlab finalize PLUGIN`: makes `P` the real native file (docs/replacement-file.md).
///
/// 1. Build: the complete replacement gets the write overlay's bytes (writes taken while the
///    plugin was served writable), the pointer marked *materialized* (so BootLab no longer takes
///    the file for a plugin), then — after a sync — the format signature; synced again.
/// 2. `link(P, P.plugin)`: the old plugin keeps a second name.
/// 3. `rename(P.replacement, P)`: the one atomic step; before it `P` is the plugin, after it the
///    native file. A crash before it leaves the old arrangement (plus the extra name), after it
///    the new one; running finalize again completes whichever steps remain.
/// 4. The overlay and the journal move to `P.plugin.overlay(.map)` and `P.plugin.fill`: they
///    belong to the old plugin, and an overlay left as `P.overlay` must not be replayed over
///    the native file.
public enum Replacement {
    /// The pointer's magic in a finalized file: the pointer document stays (it says which backup
    /// the file was materialized from) but no BootLab release reads it as a plugin pointer.
    public static let materializedMagic: [UInt8] = Array("BLMAT".utf8) + [0, 0, 1]

    public struct FinalizeReport: Codable, Sendable, Equatable {
        public var plugin: String
        public var oldPlugin: String
        /// Overlay bytes applied to the replacement (writes taken while serving).
        public var overlayBytes: UInt64
        public var fileSize: UInt64
        /// False when an earlier finalize had already switched the files.
        public var switched: Bool
    }

    public static func isFinalized(pluginPath: String) -> Bool {
        let p = ReplacementPaths(plugin: pluginPath)
        return !PluginFile.isPlugin(path: p.plugin) && PluginFile.isPlugin(path: p.oldPlugin) && access(p.plugin, F_OK) == 0
    }

    /// Finalizes `pluginPath` (see the type's comment). `overlayPath`: the overlay to apply
    /// (nil: `P.overlay` if it exists).
    public static func finalize(pluginPath: String, overlayPath: String? = nil, options: PluginFile.OpenOptions = .init(),
                                faults: MaterializeFaults = .none) throws -> FinalizeReport {
        let paths = ReplacementPaths(plugin: pluginPath)
        if isFinalized(pluginPath: pluginPath) && access(paths.replacement, F_OK) != 0 {
            let size = try RawFile(path: paths.plugin).size
            try cleanup(paths, overlayPath: overlayPath)
            return FinalizeReport(plugin: paths.plugin, oldPlugin: paths.oldPlugin, overlayBytes: 0, fileSize: size, switched: false)
        }
        guard let plugin = try PluginFile.recognize(path: paths.plugin, options: options) else {
            throw ReplacementError.notAPlugin(paths.plugin)
        }
        guard let driver = DiskFormatRegistry.driver(named: plugin.formatName) else { throw ReplacementError.unsupportedFormat(plugin.formatName) }
        guard access(paths.journal, F_OK) == 0 else {
            throw ReplacementError.notComplete(plugin: paths.plugin, done: 0, total: plugin.size)
        }
        let m = try Materializer.open(plugin: plugin)
        guard m.isComplete else {
            throw ReplacementError.notComplete(plugin: paths.plugin, done: m.status.doneBytes, total: plugin.size)
        }
        let overlayFile = overlayPath ?? (access(paths.defaultOverlay + ".map", F_OK) == 0 ? paths.defaultOverlay : nil)
        let overlay = try overlayFile.map { try WriteOverlay(base: m, path: $0, maxSize: OverlayJournal.maxLimit, readOnly: true) }
        return try finalize(m, driver: driver, overlay: overlay, faults: faults)
    }

    /// Finalizes the complete fill `m` (opened by the caller, its lock held) with `overlay`'s
    /// writes — steps 1 to 4 of the type's comment. A writable mount passes the overlay it serves,
    /// its writers held off (`WritableSwitchOver`); `bootlab finalize` one opened read-only.
    static func finalize(_ m: Materializer, driver: any DiskFormatDriver, overlay: WriteOverlay?,
                         faults: MaterializeFaults) throws -> FinalizeReport {
        let paths = m.paths, plugin = m.plugin
        guard m.isComplete else {
            throw ReplacementError.notComplete(plugin: paths.plugin, done: m.status.doneBytes, total: plugin.size)
        }

        // 1. Build.
        var merged: any BlockSource = m
        var overlayBytes: UInt64 = 0
        if let overlay {
            if overlay.size > m.size { try m.data.truncate(to: overlay.size) }
            var buf = [UInt8]()
            for r in overlay.writtenRanges {
                var at = r.lowerBound
                while at < r.upperBound {
                    let n = Int(min(8 << 20, r.upperBound - at))
                    if buf.count != n { buf = [UInt8](repeating: 0, count: n) }
                    try buf.withUnsafeMutableBytes { try overlay.read(at: at, into: $0) }
                    try m.data.write(at: at, buf)
                    at += UInt64(n)
                }
                overlayBytes += UInt64(r.count)
            }
            merged = overlay
        }
        let finalSize = merged.size
        // The pointer is retired where the format keeps it (found in the plugin file, which the
        // replacement copies byte for byte), unless the guest's writes replaced those bytes: a
        // guest write always wins. The format's identifying bytes stay zero until the end.
        let deferred = m.deferred + driver.deferredRanges(fileSize: finalSize).flatMap {
            subtracting([plugin.payloadStart..<plugin.trailerStart], from: $0)
        }
        let edits = try retirementEdits(driver: driver, pluginFile: paths.plugin).filter { e in
            e.offset + UInt64(e.old.count) <= finalSize && (try? merged.read(at: e.offset, count: e.old.count)) == e.old
        }
        for e in edits {
            for run in subtracting(deferred, from: e.offset..<e.offset + UInt64(e.new.count)) {
                try m.data.write(at: run.lowerBound, Array(e.new[Int(run.lowerBound - e.offset)..<Int(run.upperBound - e.offset)]))
            }
        }
        try m.data.sync()
        for d in deferred {
            let r = d.clamped(to: 0..<finalSize)
            guard !r.isEmpty else { continue }
            var bytes = try merged.read(at: r.lowerBound, count: r.count)
            for e in edits {
                let o = r.clamped(to: e.offset..<e.offset + UInt64(e.new.count))
                for k in o.lowerBound..<o.upperBound { bytes[Int(k - r.lowerBound)] = e.new[Int(k - e.offset)] }
            }
            try m.data.write(at: r.lowerBound, bytes)
        }
        try m.data.sync()
        faults.check(.finalizeBuilt)

        // 2. The old plugin's second name, its companions' first (the old plugin must be whole
        // under its new name before the switch).
        for suffix in driver.pluginCompanionSuffixes where access(paths.plugin + suffix, F_OK) == 0 {
            try linkIdempotent(paths.plugin + suffix, paths.oldPlugin + suffix)
        }
        try linkIdempotent(paths.plugin, paths.oldPlugin)
        syncParentDirectory(of: paths.plugin)
        faults.check(.finalizeLinked)

        // 3. The switch.
        guard rename(paths.replacement, paths.plugin) == 0 else { throw IOError("rename", path: paths.replacement, errno: errno) }
        syncParentDirectory(of: paths.plugin)
        faults.check(.finalizeRenamed)

        // 4. The old plugin's companions follow it.
        try cleanup(paths, overlayPath: overlay?.path)
        return FinalizeReport(plugin: paths.plugin, oldPlugin: paths.oldPlugin, overlayBytes: overlayBytes,
                              fileSize: finalSize, switched: true)
    }

    private static func cleanup(_ paths: ReplacementPaths, overlayPath: String?) throws {
        let overlay = overlayPath ?? paths.defaultOverlay
        for (from, to) in [(overlay, paths.oldPlugin + ".overlay"), (overlay + ".map", paths.oldPlugin + ".overlay.map"),
                           (paths.journal, paths.oldPlugin + ".fill")] where access(from, F_OK) == 0 {
            // ENOENT: moved meanwhile by another finalize completing the same steps.
            guard rename(from, to) == 0 || errno == ENOENT else { throw IOError("rename", path: from, errno: errno) }
        }
        // A companion of the old plugin (kept under its new name since step 2) is not the
        // native file's.
        for driver in DiskFormatRegistry.drivers {
            for suffix in driver.pluginCompanionSuffixes where sameFile(paths.plugin + suffix, paths.oldPlugin + suffix) {
                unlink(paths.plugin + suffix)
            }
        }
        unlink(paths.status)
        syncParentDirectory(of: paths.plugin)
    }

    private static func linkIdempotent(_ from: String, _ to: String) throws {
        if link(from, to) != 0 {
            guard errno == EEXIST, sameFile(from, to) else {
                if errno == EEXIST { throw ReplacementError.oldPluginInTheWay(to) }
                throw IOError("link", path: to, errno: errno)
            }
        }
    }

    /// The edits that retire the plugin pointer of the plugin file at `path` in its format: the
    /// pointer blob's magic `BLPTR` becomes `BLMAT`, the rest (which backup the disk came from)
    /// stays.
    static func retirementEdits(driver: any DiskFormatDriver, pluginFile path: String) throws -> [ByteEdit] {
        try driver.pointerRetirementEdits(path: path) { blob in
            guard blob.starts(with: PluginPointer.magic) else { return blob }
            return materializedMagic + blob.dropFirst(materializedMagic.count)
        }
    }

    /// `range` without the parts inside any of `holes`, as ascending runs.
    static func subtracting(_ holes: [Range<UInt64>], from range: Range<UInt64>) -> [Range<UInt64>] {
        var runs = [range]
        for h in holes {
            runs = runs.flatMap { r -> [Range<UInt64>] in
                guard r.overlaps(h) else { return [r] }
                var out: [Range<UInt64>] = []
                if r.lowerBound < h.lowerBound { out.append(r.lowerBound..<h.lowerBound) }
                if h.upperBound < r.upperBound { out.append(h.upperBound..<r.upperBound) }
                return out
            }
        }
        return runs
    }

    /// Removes the old plugin and its companions after a finalize.
    public static func dropOldPlugin(pluginPath: String) throws {
        let paths = ReplacementPaths(plugin: pluginPath)
        guard isFinalized(pluginPath: pluginPath) else { throw ReplacementError.notComplete(plugin: paths.plugin, done: 0, total: 0) }
        let companions = DiskFormatRegistry.drivers.flatMap(\.pluginCompanionSuffixes).map { paths.oldPlugin + $0 }
        for p in [paths.oldPlugin, paths.oldPlugin + ".overlay", paths.oldPlugin + ".overlay.map", paths.oldPlugin + ".fill"] + companions { unlink(p) }
        syncParentDirectory(of: paths.plugin)
    }

    /// How far the replacement of `pluginPath` is, read from its journal (no lock taken: works
    /// while a mount or a materialize runs); rate and ETA come from the running fill's status file.
    public static func status(pluginPath: String) throws -> MaterializeStatus {
        let paths = ReplacementPaths(plugin: pluginPath)
        if isFinalized(pluginPath: pluginPath) && access(paths.replacement, F_OK) != 0 {
            let size = try RawFile(path: paths.plugin).size
            return MaterializeStatus(plugin: paths.plugin, replacement: paths.plugin, phase: "finalized", totalBytes: size, doneBytes: size,
                                     chunkSize: 0, chunks: 0, filledChunks: 0, running: false)
        }
        let pointer: PluginPointer
        do { pointer = try PluginPointer.read(pluginPath: paths.plugin).0 } catch { throw ReplacementError.notAPlugin(paths.plugin) }
        guard access(paths.journal, F_OK) == 0,
              let s = try? FillJournal.read(path: paths.journal, fileSize: pointer.fileSize) else {
            return MaterializeStatus(plugin: paths.plugin, replacement: paths.replacement, phase: "not-started",
                                     totalBytes: pointer.fileSize, doneBytes: 0, chunkSize: 0, chunks: 0, filledChunks: 0, running: false)
        }
        let cs = s.header.chunkSize
        let doneBytes = s.digests.indices.reduce(UInt64(0)) { acc, c in
            guard s.digests[c] != nil else { return acc }
            let lo = UInt64(c) * cs
            return acc + (min(lo + cs, s.header.fileSize) - lo)
        }
        let running = isLockedByOther(path: paths.journal)
        var st = MaterializeStatus(plugin: paths.plugin, replacement: paths.replacement,
                                   phase: s.switched ? "complete" : (s.filledCount == s.header.chunkCount ? "verifying" : "filling"),
                                   totalBytes: s.header.fileSize, doneBytes: doneBytes, chunkSize: cs, chunks: s.header.chunkCount,
                                   filledChunks: s.filledCount, running: running)
        if running, let d = FileManager.default.contents(atPath: paths.status),
           let live = try? JSONDecoder().decode(MaterializeStatus.self, from: d) {
            st.rateBytesPerSecond = live.rateBytesPerSecond
            st.etaSeconds = live.rateBytesPerSecond.flatMap { $0 > 0 ? (st.totalBytes - st.doneBytes) / $0 : nil }
            st.copiedChunks = live.copiedChunks
            st.servedFromReplacement = live.servedFromReplacement
            st.servedFromBackup = live.servedFromBackup
        }
        return st
    }

    static func find(_ needle: [UInt8], in hay: [UInt8], from: Int) -> Int? {
        guard needle.count <= hay.count else { return nil }
        var i = from
        while i + needle.count <= hay.count {
            if hay[i] == needle[0] && Array(hay[i..<(i + needle.count)]) == needle { return i }
            i += 1
        }
        return nil
    }

    static func sameFile(_ a: String, _ b: String) -> Bool {
        var sa = stat(), sb = stat()
        return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }
}

extension Replacement {
    /// Marks the plugin pointer of a materialized native file (e.g. `bootlab convert -O F
    /// PLUGIN OUT` of a plugin of format F, which copies the pointer with the plugin's bytes) as
    /// materialized, the way finalize does, in the file's format: afterwards `OUT` is
    /// cmp-identical to a finalized replacement of the same plugin without writes, and BootLab no
    /// longer takes it for a plugin. Returns how many edits were made (0: no pointer found).
    @discardableResult
    public static func markMaterialized(path: String) throws -> Int {
        guard let driver = try DiskFormatRegistry.detect(path: path) else { throw ReplacementError.unsupportedFormat(path) }
        let edits = try retirementEdits(driver: driver, pluginFile: path)
        let file = try PosixDurableFile(path: path)
        var marked = 0
        for e in edits where try file.read(at: e.offset, count: e.old.count) == e.old && e.old != e.new {
            try file.write(at: e.offset, e.new)
            marked += 1
        }
        try file.sync()
        return marked
    }
}
