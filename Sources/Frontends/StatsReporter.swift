import BlockCore
import CFuse3
import Exposure
import Foundation

/// Writes the counters of the served sources as JSON: at exit, and whenever SIGUSR1 arrives
/// (`kill -USR1 PID` while a mount or an NBD server runs). Destination: a file (replaced
/// atomically, so a reader never sees half a document) or standard error when `path` is nil.
public final class StatsReporter: Sendable {
    public let path: String?
    private let counters: Locked<[SourceCounters]>
    private let materializations = Locked<(@Sendable () -> [MaterializeStatus])?>(nil)

    public init(path: String?, counters: [SourceCounters] = []) {
        self.path = path.map(absolutePath)
        self.counters = Locked(counters)
    }

    public func add(_ c: SourceCounters) { counters.withLock { $0.append(c) } }

    /// Reports the replacement fills too (`--materialize`): done/total bytes, rate, ETA.
    public func reportMaterializations(_ provider: @escaping @Sendable () -> [MaterializeStatus]) {
        materializations.withLock { $0 = provider }
    }

    public struct Document: Codable, Sendable, Equatable {
        public var sources: [SourceStatistics]
        /// Present only with `--materialize`.
        public var materializations: [MaterializeStatus]?
    }

    public var document: Document {
        Document(sources: counters.current.map(\.snapshot), materializations: materializations.current?())
    }

    public func write() {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? enc.encode(document), let text = String(data: data, encoding: .utf8) else { return }
        if let path {
            let tmp = path + ".tmp"
            if FileManager.default.createFile(atPath: tmp, contents: Data((text + "\n").utf8)) {
                _ = rename(tmp, path)
            }
        } else {
            writeStandardError(text + "\n")
        }
    }

    /// Writes on every SIGUSR1 from now on. The reporter must outlive the process (it is leaked).
    public func watchSIGUSR1() {
        let ctx = Unmanaged.passRetained(self).toOpaque()
        _ = bl_watch_signal(SIGUSR1, { ctx in
            Unmanaged<StatsReporter>.fromOpaque(ctx!).takeUnretainedValue().write()
        }, ctx)
    }
}

/// Default dispositions, unblocked, for SIGINT/SIGTERM/SIGHUP: a server started by a parent that
/// ignores them (test runners, some supervisors) must still stop cleanly on them.
public func resetServerSignals() { bl_reset_server_signals() }
