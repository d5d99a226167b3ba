import ArgumentParser
import BlockCore
import BackupImage
import Foundation
import Exposure
import Frontends

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Export a disk over NBD on a Unix socket, or over TCP with TLS (block filter, through nbdkit).",
        discussion: """
        The process becomes nbdkit (same PID) running BootLab's plugin — or, for a plugin file whose source is an nbdkit plugin, \
        that plugin with BootLab's library as an nbdkit filter on top (one process; --no-filter: the source in a second nbdkit). \
        The socket is created mode 0600. \
        Connect with nbd+unix:///?socket=PATH, or nbds://HOST:PORT with --tcp and TLS. Read-only unless --overlay is given.
        """
    )

    @Argument(help: "The file to serve: a plugin file (the synthesized VHDX, or with --raw its virtual disk) or a raw image.") var file: String
    @Option(help: "The Unix socket to listen on (or --tcp).") var socket: String?
    @OptionGroup var network: ServeNetworkOptions
    @Flag(help: "Serve the raw virtual disk instead of the native format.") var raw = false
    @Option(help: "Take writes into this write overlay (PATH and PATH.map, created if absent).") var overlay: String?
    @Flag(help: "Write source statistics as JSON to stderr at exit and on SIGUSR1.") var stats = false
    @Option(help: "Write the statistics to this file instead.") var statsFile: String?
    @Flag(help: "nbdkit --verbose.") var verbose = false
    @Flag(help: "Print the nbdkit command line instead of running it.") var printCommand = false
    @Option(name: .customLong("nbdkit-arg"), help: "Extra argument for nbdkit (repeatable), e.g. --nbdkit-arg=--tls=require.")
    var nbdkitArguments: [String] = []
    @Flag(help: "Fill the plugin's replacement file in the background (PLUGIN.replacement; see bootlab status, bootlab finalize).")
    var materialize = false
    @Option(help: "With --materialize: throttle the fill to this many bytes per second (e.g. 20M).") var rate: String?
    @Flag(help: "For a plugin file over an nbdkit source: run the source in a second nbdkit read over NBD, rather than in this nbdkit below BootLab's filter.")
    var noFilter = false
    @OptionGroup var access: PluginAccessOptions
    @OptionGroup var faults: FaultInjectionOptions

    func run() throws {
        guard (socket == nil) != (network.tcp == nil) else { throw ValidationError("give one of --socket PATH or --tcp HOST:PORT") }
        var serve = NBDServe(spec: SourceSpec(path: file, raw: raw, overlayPath: overlay), socketPath: socket ?? "",
                             stats: statsFile ?? (stats ? "-" : nil))
        serve.verbose = verbose
        serve.nbdkitArguments = nbdkitArguments
        do {
            serve.tcp = try network.tcp.map { try TCPEndpoint(parsing: $0) }
            serve.nbdkitArguments = (try network.security()?.nbdkitArguments ?? []) + nbdkitArguments
            // Reaches nbdkit as its plugin parameter inject-fault=SPEC (see NBDServe.arguments).
            serve.spec.faults = try faults.plan()
            let o = try access.openOptions(plugins: [file])
            if let f = access.passphrase.passphraseFile {
                serve.pluginParameters.append("passphrase-file=" + absolutePath(f))
            } else if case .bytes(let b)? = o.passphrase {
                // nbdkit (this process after exec) reads it from the environment, not argv.
                setenv(PassphraseSource.defaultEnvironmentVariable, String(decoding: b, as: UTF8.self), 1)
            }
            if let v = access.vault { serve.pluginParameters.append("vault=" + absolutePath(v)) }
            if access.allowOutside { serve.pluginParameters.append("allow-outside=true") }
            serve.pluginParameters += access.sourcePluginParameters
            if materialize {
                // The fill runs inside nbdkit (this process after exec): NBDKitPlugin's materialize=.
                guard !raw else { throw ValidationError("--materialize fills the native file; it does not combine with --raw") }
                serve.pluginParameters.append("materialize=true")
                if let rate { serve.pluginParameters.append("materialize-rate=\(try ByteSize.parse(rate))") }
            } else if rate != nil {
                throw ValidationError("--rate needs --materialize")
            }
            // Fail here, with a clear message, rather than inside nbdkit.
            _ = try SourceOpener.prepare(serve.spec, access: o, counters: SourceCounters(name: "check"))
            if !noFilter && !materialize, let mode = try Self.filterMode(file: file) {
                let library = try serve.pluginPath ?? NBDServe.locatePlugin()
                if let why = NBDServe.filterLoadFailure(library: library) {
                    // Served all the same, through the two-process path; said once, on stderr.
                    writeStandardError("bootlab serve: this nbdkit does not load BootLab's filter (\(why)); the source runs in a second nbdkit (as with --no-filter)\n")
                } else {
                    serve.filter = mode
                }
            }
            if printCommand {
                print(try serve.arguments().joined(separator: " "))
                return
            }
            try serve.exec()
        } catch {
            writeStandardError("bootlab serve: \(error)\n")
            throw ExitCode(1)
        }
    }

    /// Filter mode when `file` is a plugin file whose source is an nbdkit plugin (checked and
    /// confined by `SourceOpener.prepare` before this): nbdkit runs that plugin, BootLab's filter
    /// on top. Nil (BootLab's plugin, the source in a second nbdkit) for anything else, and for a
    /// source argument that would collide with the filter's `bootlab-` parameters.
    static func filterMode(file: String) throws -> NBDServe.FilterMode? {
        guard PluginFile.isPlugin(path: file), let record = try PluginPointer.read(pluginPath: file).0.source,
              record.spec.kind == .nbdkit else { return nil }
        let directory = PluginFile.directory(of: PluginFile.absolutePath(file))
        let words = try ExternalSource.nbdkitPluginWords(record.spec, directory: directory)
        guard !words.dropFirst().contains(where: { $0.hasPrefix(NBDServe.filterParameterPrefix) }) else { return nil }
        return NBDServe.FilterMode(words: words, directory: directory)
    }
}
