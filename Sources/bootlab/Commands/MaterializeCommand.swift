import ArgumentParser
import BlockCore
import Exposure
import Foundation

/// `bootlab materialize PLUGIN`: fills the plugin's replacement file (`PLUGIN.replacement`,
/// progress in `PLUGIN.fill`) without a front-end; resumes where an earlier run stopped.
struct MaterializeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "materialize",
        abstract: "Fill a plugin's replacement file from the backup (resumable; see docs/replacement-file.md).",
        discussion: """
        Writes PLUGIN.replacement (the native file, its signature left out until finalize) and \
        PLUGIN.fill (which ranges are complete, with their digests). Interrupted at any moment, \
        the next run resumes without copying finished ranges again. When every range is filled \
        and verified the replacement is complete; `bootlab finalize PLUGIN` (or --finalize) then \
        makes PLUGIN the native file.
        """
    )

    @Argument(help: "The plugin file.") var plugin: String
    @Option(help: "Throttle the fill to this many bytes per second (e.g. 20M).") var rate: String?
    @Option(help: "Chunk size of a new fill (e.g. 1M; a resumed fill keeps its own).") var chunkSize: String = "1M"
    @Flag(help: "Discard an earlier, unfinished fill and start over.") var restart = false
    @Option(help: "Stop once this run has copied this many bytes (e.g. 8M): a deliberate interruption; run again to resume.")
    var stopAfter: String?
    @Flag(help: "Finalize once complete (as `bootlab finalize`).") var finalize = false
    @Flag(name: .customShort("p"), help: "Show a progress bar (default on a terminal).") var progress = false
    @Flag(help: "Print the final status as JSON.") var json = false
    @Flag(help: "At verification, read every chunk back from the replacement (default: only the chunks recorded by an earlier run; those this run wrote are verified from the bytes it wrote).")
    var verifyAll = false
    // Hidden knobs for ci/bench-materialize's A/B rows (docs/replacement-file.md, "Benchmarks").
    @Flag(name: .customLong("no-prefetch"), help: ArgumentHelp("Fill one batch at a time (no read-ahead of the next batch): the serial baseline.", visibility: .hidden))
    var noPrefetch = false
    @Flag(name: .customLong("sync-inline"), help: ArgumentHelp("Wait for each data sync on the fill thread (no sync thread): the A/B baseline.", visibility: .hidden))
    var syncInline = false
    @Option(name: .customLong("digest"), help: ArgumentHelp("Chunk digest of a new fill: crc32c (default) or sha256.", visibility: .hidden))
    var digest: String?
    @Option(name: .customLong("batch-size"), help: ArgumentHelp("Bytes per fill batch (one data sync each; default 32M).", visibility: .hidden))
    var batchSize: String?
    @Option(name: .customLong("sync-every"), help: ArgumentHelp("Bytes written between two syncs of the replacement (default 128M).", visibility: .hidden))
    var syncEvery: String?
    @Option(name: .customLong("journal-sync-every"), help: ArgumentHelp("Sync the journal every N data syncs (default 2; 1: every one).", visibility: .hidden))
    var journalSyncEvery: Int?
    @Option(name: .customLong("inject-fault"), help: ArgumentHelp("Kill this process at a point (crash tests): kill:POINT.", visibility: .hidden))
    var fault: String?
    @OptionGroup var access: PluginAccessOptions

    func run() throws {
        do {
            var o = Materializer.Options()
            o.restart = restart
            o.chunkSize = try ByteSize.parse(chunkSize)
            guard o.chunkSize >= 4096, o.chunkSize & (o.chunkSize - 1) == 0 else {
                throw ValidationError("--chunk-size must be a power of two, at least 4K")
            }
            if let rate { o.rateLimit = try ByteSize.parse(rate) }
            if let stopAfter { o.stopAfterBytes = try ByteSize.parse(stopAfter) }
            if let fault { o.faults = try MaterializeFaults(parsing: fault) }
            o.prefetch = !noPrefetch
            o.syncOnThread = !syncInline
            switch digest {
            case nil, "crc32c": o.digest = .crc32c
            case "sha256": o.digest = .sha256
            default: throw ValidationError("--digest must be crc32c or sha256")
            }
            if verifyAll { o.readBack = .all }
            if let batchSize {
                o.batchBytes = try ByteSize.parse(batchSize)
                guard o.batchBytes >= o.chunkSize, o.batchBytes <= 1 << 30 else { throw ValidationError("--batch-size must be at least the chunk size and at most 1G") }
            }
            if let journalSyncEvery {
                guard journalSyncEvery >= 1 else { throw ValidationError("--journal-sync-every must be at least 1") }
                o.journalSyncEvery = journalSyncEvery
            }
            if let syncEvery { o.syncBytes = try ByteSize.parse(syncEvery) }
            guard let image = try PluginFile.recognize(path: plugin, options: try access.openOptions(plugins: [plugin])) else {
                throw ReplacementError.notAPlugin(plugin)
            }
            var status = try fill(image, options: o)
            let complete = status.phase == "complete"
            if finalize && complete {
                let report = try Replacement.finalize(pluginPath: plugin, options: image.options, faults: o.faults)
                status = try Replacement.status(pluginPath: plugin)
                if !json { print("finalized: \(report.plugin) is the native file; the plugin is kept as \(report.oldPlugin)") }
            }
            if json {
                print(try jsonText(status))
            } else if !complete {
                print("stopped: \(status.doneBytes) of \(status.totalBytes) bytes filled (\(status.copiedChunks ?? 0) chunks copied by this run); run again to resume")
            } else if !finalize {
                print("complete: \(status.doneBytes) bytes in \(status.replacement) (\(status.copiedChunks ?? 0) of \(status.chunks) chunks copied by this run)")
            }
        } catch let e as ExitCode {
            throw e
        } catch let e as ValidationError {
            throw e
        } catch {
            writeStandardError("bootlab materialize: \(error)\n")
            throw ExitCode(1)
        }
    }
}

extension MaterializeCommand {
    /// Fills until complete or stopped; the fill (and its lock) is released on return, so
    /// --finalize can take the lock next.
    func fill(_ image: ExposedImage, options o: Materializer.Options) throws -> MaterializeStatus {
        let m = try Materializer.open(plugin: image, options: o)
        let s0 = m.status
        let bar = ProgressBar(total: s0.totalBytes, label: "materialize", enabled: progress || isatty(2) != 0, force: progress)
        bar.advance(by: s0.doneBytes)
        try m.run { bar.advance(by: $0) }
        bar.finish()
        var status = m.status
        status.running = false
        return status
    }
}

func jsonText<T: Encodable>(_ value: T) throws -> String {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    return String(decoding: try enc.encode(value), as: UTF8.self)
}
