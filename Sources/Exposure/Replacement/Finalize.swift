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
        guard plugin.formatName == VHDXView.formatName else { throw ReplacementError.unsupportedFormat(plugin.formatName) }
        guard access(paths.journal, F_OK) == 0 else {
            throw ReplacementError.notComplete(plugin: paths.plugin, done: 0, total: plugin.size)
        }
        let m = try Materializer.open(plugin: plugin)
        guard m.isComplete else {
            throw ReplacementError.notComplete(plugin: paths.plugin, done: m.status.doneBytes, total: plugin.size)
        }

        // 1. Build.
        let overlayFile = overlayPath ?? (access(paths.defaultOverlay + ".map", F_OK) == 0 ? paths.defaultOverlay : nil)
        var merged: any BlockSource = m
        var overlayBytes: UInt64 = 0
        if let overlayFile {
            let overlay = try WriteOverlay(base: m, path: overlayFile, maxSize: OverlayJournal.maxLimit, readOnly: true)
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
        // The pointer, wherever a writer may have copied it within the skeleton, is marked.
        let skeletonLength = Int(min(plugin.payloadStart, finalSize))
        var skeleton = try merged.read(at: 0, count: skeletonLength)
        var i = 0
        while let hit = find(PluginPointer.magic, in: skeleton, from: i) {
            if (try? PluginPointer.decode(Array(skeleton[hit...]))) != nil {
                skeleton.replaceSubrange(hit..<(hit + 8), with: materializedMagic)
                try m.data.write(at: UInt64(hit), materializedMagic)
            }
            i = hit + 1
        }
        try m.data.sync()
        let signature = Array(skeleton.prefix(m.signatureLength))
        try m.data.write(at: 0, signature)
        try m.data.sync()
        faults.check(.finalizeBuilt)

        // 2. The old plugin's second name.
        if link(paths.plugin, paths.oldPlugin) != 0 {
            guard errno == EEXIST, sameFile(paths.plugin, paths.oldPlugin) else {
                if errno == EEXIST { throw ReplacementError.oldPluginInTheWay(paths.oldPlugin) }
                throw IOError("link", path: paths.oldPlugin, errno: errno)
            }
        }
        syncParentDirectory(of: paths.plugin)
        faults.check(.finalizeLinked)

        // 3. The switch.
        guard rename(paths.replacement, paths.plugin) == 0 else { throw IOError("rename", path: paths.replacement, errno: errno) }
        syncParentDirectory(of: paths.plugin)
        faults.check(.finalizeRenamed)

        // 4. The old plugin's companions follow it.
        try cleanup(paths, overlayPath: overlayFile)
        return FinalizeReport(plugin: paths.plugin, oldPlugin: paths.oldPlugin, overlayBytes: overlayBytes,
                              fileSize: finalSize, switched: true)
    }

    private static func cleanup(_ paths: ReplacementPaths, overlayPath: String?) throws {
        let overlay = overlayPath ?? paths.defaultOverlay
        for (from, to) in [(overlay, paths.oldPlugin + ".overlay"), (overlay + ".map", paths.oldPlugin + ".overlay.map"),
                           (paths.journal, paths.oldPlugin + ".fill")] where access(from, F_OK) == 0 {
            guard rename(from, to) == 0 else { throw IOError("rename", path: from, errno: errno) }
        }
        unlink(paths.status)
        syncParentDirectory(of: paths.plugin)
    }

    /// Removes the old plugin and its companions after a finalize.
    public static func dropOldPlugin(pluginPath: String) throws {
        let paths = ReplacementPaths(plugin: pluginPath)
        guard isFinalized(pluginPath: pluginPath) else { throw ReplacementError.notComplete(plugin: paths.plugin, done: 0, total: 0) }
        for p in [paths.oldPlugin, paths.oldPlugin + ".overlay", paths.oldPlugin + ".overlay.map", paths.oldPlugin + ".fill"] { unlink(p) }
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
              let s = try? FillJournal.read(path: paths.journal) else {
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
    /// Marks the plugin pointer of a materialized native file (e.g. `bootlab convert -O vhdx
    /// PLUGIN OUT`, which copies the pointer with the plugin's bytes) as materialized, the way
    /// finalize does: afterwards `OUT` is cmp-identical to a finalized replacement of the same
    /// plugin without writes, and BootLab no longer takes it for a plugin. Returns how many
    /// pointers were marked (0: none found).
    @discardableResult
    public static func markMaterialized(path: String) throws -> Int {
        guard try DiskFormatRegistry.detect(path: path)?.name == VHDXView.formatName else {
            throw ReplacementError.unsupportedFormat(path)
        }
        let file = try PosixDurableFile(path: path)
        // BootLab's VHDX skeleton keeps the metadata region (and the pointer) at 2 MiB, before
        // any payload: the search never reaches guest data.
        let head = try file.read(at: 0, count: Int(min(try file.size(), 3 << 20)))
        var marked = 0, i = 0
        while let hit = find(PluginPointer.magic, in: head, from: i) {
            if (try? PluginPointer.decode(Array(head[hit...]))) != nil {
                try file.write(at: UInt64(hit), materializedMagic)
                marked += 1
            }
            i = hit + 1
        }
        try file.sync()
        return marked
    }
}
