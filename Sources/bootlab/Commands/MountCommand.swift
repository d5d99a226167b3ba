import ArgumentParser
import BlockCore
import Exposure
import Foundation
import Frontends

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Show a directory through FUSE with its disks synthesized on demand (file-system filter).",
        discussion: """
        Every file of DIRECTORY passes through; exposed names are served from their sources. \
        Runs in the foreground until Ctrl-C, SIGTERM or `fusermount3 -u MOUNTPOINT`. \
        Statistics (--stats/--stats-file) are written at exit and on SIGUSR1.
        """
    )

    @Argument(help: "The directory to show (holding plugin files).") var directory: String
    @Argument(help: "Where to mount it.") var mountpoint: String
    @Option(name: .customLong("expose"), help: "NAME=FILE: show FILE's disk as NAME at the mount's root (repeatable).")
    var exposures: [String] = []
    @Flag(help: "Take writes to exposed files into overlays (NAME.overlay beside them, or in --overlay-dir).")
    var writable = false
    @Option(help: "Directory for the write overlays.") var overlayDir: String?
    @Flag(help: "Expose the raw virtual disk instead of the native format.") var raw = false
    @Flag(help: "Fork into the background once mounted.") var daemon = false
    @Flag(help: "Let other users see the mount (FUSE allow_other).") var allowOther = false
    @Flag(help: "Serve requests on one thread.") var singleThread = false
    @Flag(help: "FUSE debug output.") var debug = false
    @Flag(help: "Serve read-only exposed files through the kernel page cache: repeated reads at memory speed, first reads slower.")
    var pageCache = false
    @Flag(help: "Write source statistics as JSON to stderr at exit and on SIGUSR1.") var stats = false
    @Option(help: "Write the statistics to this file instead.") var statsFile: String?
    @Flag(help: "Fill each served plugin's replacement file in the background (PLUGIN.replacement; see bootlab status, bootlab finalize).")
    var materialize = false
    @Option(help: "With --materialize: throttle each fill to this many bytes per second (e.g. 20M).") var rate: String?
    @Flag(help: "With --materialize: finalize each replacement as soon as it is complete, while serving (open files, writable ones too, keep working: they switch to the native file).")
    var finalize = false
    @Option(help: ArgumentHelp("With --materialize: kill this process at a point (crash tests): kill:POINT.", visibility: .hidden))
    var materializeFault: String?
    @Option(help: ArgumentHelp("With --finalize: wait while this file exists before finalizing (tests: a chosen switch point).", visibility: .hidden))
    var finalizeHold: String?
    @OptionGroup var access: PluginAccessOptions
    @OptionGroup var faults: FaultInjectionOptions

    func run() throws {
        var explicit: [String: String] = [:]
        for e in exposures {
            guard let eq = e.firstIndex(of: "="), eq != e.startIndex, !e[e.index(after: eq)...].isEmpty,
                  !e[..<eq].contains("/") else {
                throw ValidationError("--expose wants NAME=FILE with a plain NAME, got '\(e)'")
            }
            explicit[String(e[..<eq])] = String(e[e.index(after: eq)...])
        }
        var openOptions: PluginFile.OpenOptions
        let plan: FaultPlan
        var materializers: MaterializerSet?
        do {
            if materialize {
                // The fill threads start before FUSE would fork into the background.
                guard !daemon else { throw ValidationError("--materialize runs in the foreground (no --daemon)") }
                var o = Materializer.Options()
                if let rate { o.rateLimit = try ByteSize.parse(rate) }
                if let materializeFault { o.faults = try MaterializeFaults(parsing: materializeFault) }
                // As for serve: the fill, its overlay and finalize are the native file's, not the raw disk's.
                guard !raw else { throw ValidationError("--materialize fills the native file; it does not combine with --raw") }
                guard finalizeHold == nil || finalize else { throw ValidationError("--finalize-hold needs --finalize") }
                materializers = MaterializerSet(options: o, writable: writable, finalizeOnCompletion: finalize,
                                                finalizeHold: finalizeHold.map(absolutePath))
            } else if rate != nil || materializeFault != nil || finalize || finalizeHold != nil {
                throw ValidationError("--rate, --finalize and --finalize-hold need --materialize")
            }
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            openOptions = try access.openOptions(plugins: names.map { directory + "/" + $0 } + Array(explicit.values))
            plan = try faults.plan()
            openOptions.faults = plan
        } catch {
            writeStandardError("bootlab mount: \(error)\n")
            throw ExitCode(1)
        }
        let reporter = StatsReporter(path: statsFile)
        let catalog = MountCatalog(backingDirectory: directory, explicit: explicit, writable: writable,
                                   overlayDirectory: overlayDir, raw: raw, access: openOptions, faults: plan, reporter: reporter,
                                   materializers: materializers)
        if let materializers {
            reporter.reportMaterializations { materializers.statuses }
            // Every plugin of the directory starts filling now, not at its first read.
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
            do {
                for name in names where PluginFile.isPlugin(path: directory + "/" + name) { _ = try catalog.exposedFile(named: name) }
                for name in explicit.keys.sorted() { _ = try catalog.exposedFile(named: name) }
            } catch {
                writeStandardError("bootlab mount: \(error)\n")
                throw ExitCode(1)
            }
        }
        var options = FuseMount.Options()
        options.foreground = !daemon
        options.allowOther = allowOther
        options.singleThreaded = singleThread
        options.debug = debug
        options.pageCache = pageCache
        options.extraNames = catalog.extraNames
        // A read-only --expose of a raw image is served by splicing the file (docs/frontends.md).
        options.fileBackedExposures = !writable && !materialize && explicit.values.contains { !PluginFile.isPlugin(path: $0) }
        // Before installing handlers: a parent may have left these ignored or blocked.
        resetServerSignals()
        let reporting = stats || statsFile != nil
        if reporting { reporter.watchSIGUSR1(); reporter.write() }
        let mount = FuseMount(mountpoint: mountpoint, backingDirectory: directory, options: options, provider: catalog.provider)
        do {
            try mount.run()
        } catch {
            materializers?.stopAll()
            writeStandardError("bootlab mount: \(error)\n")
            throw ExitCode(1)
        }
        materializers?.stopAll()
        if reporting { reporter.write() }
    }
}
