import BlockCore
import DiskFormats
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where a plugin's replacement lives: files beside the plugin `P` (docs/replacement-file.md).
public struct ReplacementPaths: Sendable, Equatable {
    public let plugin: String
    public init(plugin: String) { self.plugin = PluginFile.absolutePath(plugin) }
    /// The native file being filled; becomes `P` at finalize.
    public var replacement: String { plugin + ".replacement" }
    /// The progress journal (`FillJournal`).
    public var journal: String { plugin + ".fill" }
    /// Rate and ETA of a running fill (JSON, replaced atomically).
    public var status: String { plugin + ".fill.status" }
    /// The old plugin after finalize.
    public var oldPlugin: String { plugin + ".plugin" }
    /// The write overlay `bootlab mount --writable` keeps beside the plugin by default.
    public var defaultOverlay: String { plugin + ".overlay" }
}

public enum ReplacementError: Error, CustomStringConvertible, Equatable {
    /// The journal belongs to another plugin (re-exposed or reconfigured since the fill began).
    case otherPlugin(journal: String)
    /// Another process (a mount, another materialize) is filling this replacement.
    case busy(journal: String)
    case notComplete(plugin: String, done: UInt64, total: UInt64)
    case notAPlugin(String)
    case unsupportedFormat(String)
    case oldPluginInTheWay(String)
    /// Verification found chunks that differ from what the stream delivered, again and again.
    case verificationFailed(chunks: Int)

    public var description: String {
        switch self {
        case .otherPlugin(let j):
            return "\(j) records the fill of another plugin (re-exposed or reconfigured since); run bootlab materialize --restart to start over"
        case .busy(let j): return "another process is filling this replacement (\(j) is locked); stop it first"
        case let .notComplete(p, done, total):
            return "the replacement of \(p) is not complete (\(done) of \(total) bytes filled and verified); run bootlab materialize \(p) first"
        case .notAPlugin(let p): return "\(p) is not a BootLab plugin file"
        case .unsupportedFormat(let f): return "\(f) has no format BootLab can finalize or mark materialized"
        case .oldPluginInTheWay(let p): return "\(p) exists and is not the plugin being finalized; move it away first"
        case .verificationFailed(let n): return "\(n) chunks of the replacement still differ from the stream after refilling"
        }
    }
}

/// How far a replacement is, for `--stats`, `bootlab status` and the progress bar.
public struct MaterializeStatus: Codable, Sendable, Equatable {
    public var plugin: String
    public var replacement: String
    /// not-started, filling, verifying, complete (switched over), finalized
    public var phase: String
    public var totalBytes: UInt64
    public var doneBytes: UInt64
    public var chunkSize: UInt64
    public var chunks: Int
    public var filledChunks: Int
    /// Whether a process is filling it now.
    public var running: Bool
    /// Of the running fill (bytes per second since it started, and the estimate of what is left).
    public var rateBytesPerSecond: UInt64?
    public var etaSeconds: UInt64?
    /// Of the running fill: chunks copied by it, payload bytes served from the replacement and
    /// from the backup.
    public var copiedChunks: Int?
    public var servedFromReplacement: UInt64?
    public var servedFromBackup: UInt64?
}

/// Fills a plugin's replacement file in the background while the plugin is served, and serves
/// the plugin's bytes from both: ranges already filled from the replacement (no decrypt, no
/// decompress), the rest through the plugin (backup). A read of a range not yet filled moves it
/// to the front of the fill queue. See docs/replacement-file.md for the design and its reasons.
///
/// As a `BlockSource` it stands where the `ExposedImage` stood (below the front-end's read-only
/// guard and write overlay): it never takes writes.
public final class Materializer: BlockSource, @unchecked Sendable {
    // @unchecked: mutable state behind `state` / `runtime` locks; files are thread-safe.
    public struct Options: Sendable {
        public var chunkSize: UInt64 = 1 << 20
        /// Bytes per fill batch: read, hashed and written together (memory: two batches; at
        /// most a quarter of the file).
        public var batchBytes: UInt64 = 32 << 20
        /// Bytes written between two syncs of the replacement (whole batches, at least one; at
        /// most a quarter of the file). Each sync is followed by the `filled` records of what it made durable. Under
        /// `rateLimit` every batch is synced.
        public var syncBytes: UInt64 = 128 << 20
        /// Sync the journal every this many data syncs (and whenever the fill ends, before
        /// verification and with every other kind of record). Records are written only after
        /// their data sync, so a later journal sync can only lose records (a crash re-copies
        /// those chunks), never name a chunk whose bytes are not durable. 1: every data sync.
        public var journalSyncEvery = 2
        /// Read the next batch from the backup while the current one is written and synced
        /// (false: one batch at a time, the serial baseline of `ci/bench-materialize`).
        public var prefetch = true
        /// Sync the replacement on its own thread while the next batches are read and written
        /// (the records of a sync still follow it: only chunks written before the sync began are
        /// recorded by it). false: the fill waits for each data sync (the A/B baseline of
        /// `ci/bench-materialize`).
        public var syncOnThread = true
        /// The digest of a new fill's chunks (a resumed fill keeps its journal's).
        public var digest: FillJournal.DigestKind = .crc32c
        /// Which chunks the verification pass reads back from the replacement and hashes.
        public var readBack: ReadBack = .recordedEarlier
        public enum ReadBack: Sendable {
            /// Only the chunks recorded by an earlier process: those this process wrote are
            /// verified from the bytes it wrote (their digest was computed from the very buffer
            /// written and synced; see docs/replacement-file.md).
            case recordedEarlier
            /// Every chunk (the slower, belt-and-braces pass).
            case all
        }
        /// Bytes per second; nil: as fast as the backup delivers.
        public var rateLimit: UInt64?
        /// Discard an existing fill and start over.
        public var restart = false
        public var faults: MaterializeFaults = .none
        /// Write `<plugin>.fill.status` about once a second while filling.
        public var writeStatusFile = true
        /// Release the materialization lock once the replacement is complete (a read-only
        /// front-end: `bootlab finalize` may then switch the files while it serves).
        public var releaseLockWhenComplete = false
        /// Stop (as if asked to) once this run has copied at least this many bytes: an
        /// interruption at a deterministic point, for tests and lab validators.
        public var stopAfterBytes: UInt64?
        public init() {}
    }

    public let plugin: ExposedImage
    public let paths: ReplacementPaths
    public let options: Options
    let data: any DurableFile
    let journal: any DurableFile
    public let chunkSize: UInt64
    public let chunkCount: Int
    /// How this fill's chunk digests are computed (its journal's kind).
    public let digestKind: FillJournal.DigestKind
    /// The format's identifying bytes (`DiskFormatDriver.deferredRanges`): kept zero while
    /// filling, written last by finalize.
    let deferred: [Range<UInt64>]
    let state: Locked<FillJournal.State>
    private let journalLength: Locked<UInt64>
    /// Journal bytes written but not yet synced (deferred `filled` records).
    private let journalUnsynced = Locked<Int>(0)
    /// Chunks whose bytes this process wrote and synced, with the digest of exactly those bytes:
    /// verification needs no read-back for them (unless `readBack` is `.all`).
    private let writtenHere = Locked<[Bool]>([])

    private struct Runtime: Sendable {
        var priority: [Int] = []
        var cursor = 0
        var stopRequested = false
        var running = false
        var startedAt: Double = 0
        var bytesThisRun: UInt64 = 0
        var copiedChunks = 0
        var lastGuestRead: Double = 0
        var batches = 0
        var flushes = 0
        var verifiedChunks = 0
        var verifying = false
        var error: String?
        var lastStatusWrite: Double = 0
    }
    private let runtime = Locked(Runtime())
    private let servedReplacement = Locked<UInt64>(0)
    private let servedBackup = Locked<UInt64>(0)
    private let done = DispatchSemaphore(value: 0)
    /// Called once the replacement is complete (switched over).
    public let onComplete = Locked<(@Sendable () -> Void)?>(nil)

    // MARK: Opening

    /// Opens (or starts) the fill of `plugin`'s replacement with the files beside it, taking the
    /// materialization lock (another process filling it: `ReplacementError.busy`).
    public static func open(plugin: ExposedImage, options: Options = Options()) throws -> Materializer {
        let paths = ReplacementPaths(plugin: plugin.pluginPath)
        let journal = try PosixDurableFile(path: paths.journal, create: true)
        guard journal.lockExclusive(waitingUpTo: 2) else { throw ReplacementError.busy(journal: paths.journal) }
        // A journal without its replacement (deleted by hand) names chunks nobody holds: start over.
        var o = options
        if access(paths.replacement, F_OK) != 0 { o.restart = true }
        let data = try PosixDurableFile(path: paths.replacement, create: true)
        return try Materializer(plugin: plugin, data: data, journal: journal, options: o)
    }

    /// Over given files (tests pass files that drop unsynced writes).
    public init(plugin: ExposedImage, data: any DurableFile, journal: any DurableFile, options: Options) throws {
        self.plugin = plugin
        self.paths = ReplacementPaths(plugin: plugin.pluginPath)
        self.options = options
        self.data = data
        self.journal = journal
        // Only those in the plugin's own bytes (served from the plugin file, so serving never
        // sees the zeros): a fixed VHD's first bytes are the disk's, its footer identifies it.
        let payload = plugin.payloadStart..<plugin.trailerStart
        self.deferred = (DiskFormatRegistry.driver(named: plugin.formatName)?.deferredRanges(fileSize: plugin.size) ?? [])
            .flatMap { Replacement.subtracting([payload], from: $0) }
        let identity = try Materializer.identity(of: plugin)
        let fileSize = plugin.size
        var st: FillJournal.State?
        let jsize = try journal.size()
        if !options.restart, jsize >= UInt64(FillJournal.headerLength) {
            let bytes = try journal.read(at: 0, count: Int(jsize))
            let h = try FillJournal.parseHeader(bytes, path: journal.path)
            guard h.identity == identity, h.fileSize == fileSize else {
                throw ReplacementError.otherPlugin(journal: journal.path)
            }
            let s = try FillJournal.replay(bytes, path: journal.path, fileSize: fileSize)
            if s.tornBytes > 0 {
                try journal.truncate(to: s.validLength)
                try journal.sync()
            }
            // The replacement may be shorter than the file if a crash came before its size was set.
            if try data.size() < fileSize { try data.truncate(to: fileSize) }
            st = s
        }
        if st == nil {
            // A new fill: the journal is reset first (no chunk named), then the replacement emptied.
            try journal.truncate(to: 0)
            let header = FillJournal.Header(chunkSize: options.chunkSize, fileSize: fileSize, identity: identity, digest: options.digest)
            try journal.write(at: 0, FillJournal.encode(header))
            try journal.sync()
            try data.truncate(to: 0)
            try data.truncate(to: fileSize)
            try data.sync()
            syncParentDirectory(of: journal.path)
            st = FillJournal.State(header: header, digests: Array(repeating: nil, count: header.chunkCount),
                                   validLength: UInt64(FillJournal.headerLength), tornBytes: 0)
        }
        self.chunkSize = st!.header.chunkSize
        self.digestKind = st!.header.digest
        self.chunkCount = st!.header.chunkCount
        self.journalLength = Locked(st!.validLength)
        self.state = Locked(st!)
        self.writtenHere.withLock { $0 = Array(repeating: false, count: st!.header.chunkCount) }
    }

    /// SHA-256 of the plugin's own bytes (skeleton and trailer): a journal is never replayed
    /// for another plugin.
    static func identity(of plugin: ExposedImage) throws -> [UInt8] {
        let f = try RawFile(path: plugin.pluginPath)
        var h = SHA256()
        h.update(Array("bootlab replacement v1".utf8))
        h.update(try f.read(at: 0, count: Int(plugin.payloadStart)))
        h.update(try f.read(at: plugin.trailerStart, count: Int(plugin.size - plugin.trailerStart)))
        return h.finalize()
    }

    // MARK: State

    public var isComplete: Bool { state.withLock { $0.switched } }
    public var filledChunks: Int { state.withLock { $0.filledCount } }
    /// Chunks copied by this process (a resumed fill does not copy the ones recorded before).
    public var copiedChunks: Int { runtime.withLock { $0.copiedChunks } }
    public var lastError: String? { runtime.withLock { $0.error } }
    public var servedFromReplacement: UInt64 { servedReplacement.current }
    public var servedFromBackup: UInt64 { servedBackup.current }

    func chunkRange(_ c: Int) -> Range<UInt64> {
        let lo = UInt64(c) * chunkSize
        return lo..<min(lo + chunkSize, plugin.size)
    }

    public var status: MaterializeStatus {
        let s = state.current, r = runtime.current
        let doneBytes = s.digests.indices.reduce(UInt64(0)) { $0 + (s.digests[$1] == nil ? 0 : UInt64(chunkRange($1).count)) }
        let phase = s.switched ? "complete" : (r.verifying || s.filledCount == chunkCount ? "verifying" : "filling")
        var rate: UInt64?, eta: UInt64?
        if r.running, r.startedAt > 0 {
            let elapsed = max(monotonicSeconds() - r.startedAt, 0.001)
            rate = UInt64(Double(r.bytesThisRun) / elapsed)
            if let rate, rate > 0 { eta = (plugin.size - doneBytes) / rate }
        }
        return MaterializeStatus(plugin: paths.plugin, replacement: paths.replacement, phase: phase, totalBytes: plugin.size,
                                 doneBytes: doneBytes, chunkSize: chunkSize, chunks: chunkCount, filledChunks: s.filledCount,
                                 running: r.running, rateBytesPerSecond: rate, etaSeconds: s.switched ? 0 : eta,
                                 copiedChunks: r.copiedChunks, servedFromReplacement: servedReplacement.current,
                                 servedFromBackup: servedBackup.current)
    }

    func writeStatusFile(force: Bool = false) {
        guard options.writeStatusFile else { return }
        let now = monotonicSeconds()
        let due = runtime.withLock { r -> Bool in
            if !force && now - r.lastStatusWrite < 1 { return false }
            r.lastStatusWrite = now
            return true
        }
        guard due else { return }
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let d = try? enc.encode(status) else { return }
        let tmp = paths.status + ".tmp"
        if FileManager.default.createFile(atPath: tmp, contents: d + Data("\n".utf8)) { _ = rename(tmp, paths.status) }
    }

    // MARK: Serving

    public var size: UInt64 { plugin.size }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        let end = offset + UInt64(buffer.count)
        var at = offset
        var fromBackup: [Int] = []
        while at < end {
            // Pieces: the plugin's own bytes (skeleton, trailer), or one chunk of payload.
            let c = Int(at / chunkSize)
            var pieceEnd = min(end, chunkRange(c).upperBound)
            let inPayload = at >= plugin.payloadStart && at < plugin.trailerStart
            if at < plugin.payloadStart { pieceEnd = min(pieceEnd, plugin.payloadStart) }
            if inPayload { pieceEnd = min(pieceEnd, plugin.trailerStart) }
            let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(at - offset)..<Int(pieceEnd - offset)])
            if !inPayload {
                try plugin.read(at: at, into: piece)
            } else if state.withLock({ $0.digests[c] != nil }) {
                try data.read(at: at, into: piece)
                servedReplacement.withLock { $0 += UInt64(piece.count) }
            } else {
                try plugin.read(at: at, into: piece)
                servedBackup.withLock { $0 += UInt64(piece.count) }
                fromBackup.append(c)
            }
            at = pieceEnd
        }
        let now = monotonicSeconds()
        runtime.withLock { r in
            r.lastGuestRead = now
            for c in fromBackup where !r.priority.contains(c) { r.priority.append(c) }
        }
    }

    /// Reported as data throughout: asking the view would open the backup, which after the
    /// switch-over must never happen.
    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        return r.isEmpty ? [] : [Extent(offset: r.lowerBound, length: UInt64(r.count), kind: .data)]
    }

    // MARK: Filling

    /// Starts filling on a background thread (returns at once).
    public func start() {
        let alreadyRunning = runtime.withLock { r -> Bool in
            if r.running { return true }
            r.running = true
            return false
        }
        guard !alreadyRunning else { return }
        let t = Thread { [self] in
            do { try self.fillLoop() } catch { self.runtime.withLock { $0.error = "\(error)" } }
            self.runtime.withLock { $0.running = false }
            self.writeStatusFile(force: true)
            self.done.signal()
        }
        t.name = "bootlab-materialize"
        t.start()
    }

    /// Asks the background fill to stop after its current batch and waits for it.
    public func stop() {
        let wasRunning = runtime.withLock { r -> Bool in r.stopRequested = true; return r.running }
        if wasRunning { done.wait() }
    }

    /// Waits for the background fill to end (complete, stopped or failed).
    public func wait() { done.wait(); done.signal() }

    /// Fills and verifies on the calling thread until complete (or stopped); `progress` is told
    /// of each batch's bytes.
    public func run(progress: (@Sendable (UInt64) -> Void)? = nil) throws {
        runtime.withLock { $0.running = true }
        defer { runtime.withLock { $0.running = false }; writeStatusFile(force: true) }
        try fillLoop(progress: progress)
    }

    private var stopRequested: Bool { runtime.withLock { $0.stopRequested } }

    private func fillLoop(progress: (@Sendable (UInt64) -> Void)? = nil) throws {
        runtime.withLock { $0.startedAt = monotonicSeconds(); $0.bytesThisRun = 0 }
        writeStatusFile(force: true)
        if state.withLock({ $0.switched }), options.releaseLockWhenComplete { (journal as? PosixDurableFile)?.unlock() }
        var verifications = 0
        // Two batches at most: the one being written here, and the next, read from the backup
        // (decrypted, decompressed) and hashed meanwhile on another thread.
        var next: Background<PreparedBatch>?
        // Batches written and not yet handed to a data sync.
        var pending = Pending()
        // The data sync running on its own thread (at most one), and what it will record: only
        // batches whose writes returned before it began. Batches written meanwhile go to
        // `pending` and wait for the next sync.
        var syncing: (job: Background<Void>, chunks: Set<Int>)?
        // Bytes this loop wrote (synced or not): what `Options.stopAfterBytes` counts.
        var writtenThisRun: UInt64 = 0
        // A sync on the thread failed: nothing written after it is recorded by this run.
        var syncFailed = false
        func joinSync() throws {
            guard let s = syncing else { return }
            syncing = nil
            do { try s.job.get() } catch { syncFailed = true; throw error }
        }
        func inFlight() -> Set<Int> { syncing.map { pending.chunks.union($0.chunks) } ?? pending.chunks }
        defer {
            next?.discard()
            // However the loop ends (stopped, complete, failed), what was written is synced and
            // recorded, and deferred records are synced; a failure here leaves those chunks
            // unrecorded (copied again by the next start), never recorded and not durable. A
            // failed sync on the thread records nothing more (its error was, or is now, the
            // loop's; the chunks written since are copied again).
            if (try? joinSync()) != nil, !syncFailed { try? flush(&pending) }
            try? syncJournal()
        }
        while !stopRequested {
            if state.withLock({ $0.switched }) {
                // Complete before this start (a restart after the switch-over).
                onComplete.current?()
                break
            }
            let batch: PreparedBatch
            if let n = next {
                next = nil
                batch = try n.get()
            } else {
                let chunks = nextBatch(excluding: inFlight())
                if chunks.isEmpty {
                    if !pending.isEmpty || syncing != nil {
                        try joinSync()
                        try flush(&pending)
                        continue
                    }
                    let bad = try verify()
                    if stopRequested { break }
                    if bad == 0 {
                        try append([FillJournal.Record(kind: .verified)])
                        options.faults.check(.switchOver)
                        try append([FillJournal.Record(kind: .switched)])
                        state.withLock { $0.verified = true; $0.switched = true }
                        writeStatusFile(force: true)
                        if options.releaseLockWhenComplete { (journal as? PosixDurableFile)?.unlock() }
                        onComplete.current?()
                        break
                    }
                    verifications += 1
                    if verifications > 3 { throw ReplacementError.verificationFailed(chunks: bad) }
                    continue
                }
                yieldToGuest()
                batch = try prepare(chunks)
            }
            let stopsAfterThis = options.stopAfterBytes.map { writtenThisRun + batch.bytes >= $0 } ?? false
            if !stopsAfterThis, options.prefetch {
                let chunks = nextBatch(excluding: inFlight().union(batch.chunks))
                if !chunks.isEmpty {
                    next = Background(name: "bootlab-materialize-prefetch") { [self] in
                        yieldToGuest()
                        return try prepare(chunks)
                    }
                }
            }
            let bytes = try write(batch)
            writtenThisRun += bytes
            pending.add(batch)
            // Throttled, every batch is synced and recorded (progress stays smooth).
            // At least every quarter of the file: an interruption keeps most of the work.
            if pending.bytes >= min(options.syncBytes, plugin.size / 4) || options.rateLimit != nil || stopsAfterThis {
                // One sync in flight at most: the previous one ends (and records) first.
                try joinSync()
                if options.syncOnThread && options.rateLimit == nil && !stopsAfterThis {
                    let handed = pending
                    pending = Pending()
                    syncing = (Background(name: "bootlab-materialize-sync") { [self] in
                        var p = handed
                        try flush(&p)
                    }, handed.chunks)
                } else {
                    try flush(&pending)
                }
            }
            progress?(bytes)
            writeStatusFile()
            throttle()
            if stopsAfterThis { break }
        }
    }

    /// Batches written to the replacement, not yet synced nor recorded.
    struct Pending {
        var batches: [(chunks: [Int], digests: [[UInt8]])] = []
        var chunks: Set<Int> = []
        var bytes: UInt64 = 0
        var isEmpty: Bool { batches.isEmpty }
        mutating func add(_ b: PreparedBatch) {
            batches.append((b.chunks, b.digests))
            chunks.formUnion(b.chunks)
            bytes += b.bytes
        }
    }

    /// A batch's memory, reused from batch to batch: a fresh 32 MiB allocation per batch costs
    /// page faults and the kernel's clearing of every page (a tenth of the fill's CPU in `perf`).
    final class BatchBuffer: @unchecked Sendable {
        // @unchecked: one batch uses it at a time (taken from the pool, given back after writing).
        let bytes: UnsafeMutableRawBufferPointer
        init(count: Int) { bytes = .allocate(byteCount: max(count, 1), alignment: 4096) }
        deinit { bytes.deallocate() }
    }

    /// A batch read from the stream and hashed, not yet written.
    struct PreparedBatch: Sendable {
        var chunks: [Int]
        /// Where each chunk's bytes lie in `buffer`; nil: the chunk is all zeros (nothing stored).
        var slices: [Range<Int>?]
        var digests: [[UInt8]]
        var buffer: BatchBuffer
        /// The chunks' bytes, zero chunks included.
        var bytes: UInt64
    }

    /// Work on its own thread: the next batch prepared while the current one is committed, or
    /// a data sync (and its records) while the next batches are written.
    final class Background<T: Sendable>: @unchecked Sendable {
        // @unchecked: `result` is written once by the worker before `done` is signalled.
        private var result: Result<T, any Error>?
        private var body: (@Sendable () throws -> T)?
        private let done = DispatchSemaphore(value: 0)

        init(name: String, _ body: @escaping @Sendable () throws -> T) {
            self.body = body
            let t = Thread { [self] in
                do {
                    // The work (and the materializer it holds) is dropped before `done` is
                    // signalled: once the fill returns, nothing keeps the materializer, and with
                    // it the journal's lock, alive behind the caller's back.
                    let work = self.body!
                    self.body = nil
                    result = Result { try work() }
                }
                done.signal()
            }
            t.name = name
            t.start()
        }

        func get() throws -> T {
            done.wait()
            return try result!.get()
        }

        /// Waits for the worker and drops its result (the fill stopped or failed).
        func discard() { done.wait() }
    }

    /// The next chunks to copy: those guests asked for first, then onward from the cursor.
    private func nextBatch(excluding inFlight: Set<Int>) -> [Int] {
        let digests = state.withLock { $0.digests }
        // Throttled, a batch is about a quarter second of the rate, so progress stays smooth.
        // At most a quarter of the file, so even a small file is filled (and recorded) in steps.
        var batchBytes = min(options.batchBytes, plugin.size / 4)
        if let rate = options.rateLimit { batchBytes = min(batchBytes, rate / 4) }
        if let limit = options.stopAfterBytes { batchBytes = min(batchBytes, limit) }
        let perBatch = max(1, Int(batchBytes / chunkSize))
        return runtime.withLock { r in
            var out: [Int] = []
            while let c = r.priority.first, out.count < perBatch {
                r.priority.removeFirst()
                if digests[c] == nil && !inFlight.contains(c) && !out.contains(c) { out.append(c) }
            }
            var wrapped = false
            while out.count < perBatch {
                if r.cursor >= chunkCount {
                    if wrapped || out.count > 0 { break }
                    r.cursor = 0
                    wrapped = true
                }
                let c = r.cursor
                r.cursor += 1
                if digests[c] == nil && !inFlight.contains(c) && !out.contains(c) { out.append(c) }
            }
            return out
        }
    }

    private let bufferPool = Locked<[BatchBuffer]>([])

    /// A buffer of at least `count` bytes (of the batch size at least), from the pool if it has one.
    private func takeBuffer(_ count: Int) -> BatchBuffer {
        let want = max(count, Int(min(options.batchBytes, plugin.size / 4)))
        return bufferPool.withLock { pool in
            if let i = pool.firstIndex(where: { $0.bytes.count >= count }) { return pool.remove(at: i) }
            return nil
        } ?? BatchBuffer(count: want)
    }

    private func giveBack(_ b: BatchBuffer) {
        bufferPool.withLock { if $0.count < 3 { $0.append(b) } }
    }

    /// Reads `chunks` from the stream (through the plugin: decrypt, decompress) and hashes
    /// them; nothing is written. Chunks no data extent touches are zeros, known without reading
    /// (as convert skips them); runs of adjacent chunks are read with one request, which the
    /// backup reader decodes in parallel straight into the buffer.
    private func prepare(_ chunks: [Int]) throws -> PreparedBatch {
        let ranges = chunks.map(chunkRange)
        var slices = [Range<Int>?](repeating: nil, count: chunks.count)
        var stored = 0
        for (i, r) in ranges.enumerated() where try plugin.extents(in: r).contains(where: { $0.kind == .data && $0.length > 0 }) {
            slices[i] = stored..<stored + r.count
            stored += r.count
        }
        let buffer = takeBuffer(stored)
        do {
            var i = 0
            while i < chunks.count {
                guard let first = slices[i] else { i += 1; continue }
                var j = i + 1
                while j < chunks.count, slices[j] != nil, ranges[j].lowerBound == ranges[j - 1].upperBound { j += 1 }
                // Not zero-filled first: the read fills every byte (or throws).
                try plugin.read(at: ranges[i].lowerBound,
                                into: UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[first.lowerBound..<slices[j - 1]!.upperBound]))
                i = j
            }
        } catch {
            giveBack(buffer)
            throw error
        }
        // The format's identifying bytes are written last, at finalize: a half-filled
        // replacement is never taken for a complete native file.
        for (i, r) in ranges.enumerated() {
            guard let s = slices[i] else { continue }
            for d in deferred where d.overlaps(r) {
                let c = d.clamped(to: r)
                let lo = s.lowerBound + Int(c.lowerBound - r.lowerBound)
                UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[lo..<lo + c.count]).initializeMemory(as: UInt8.self, repeating: 0)
            }
        }
        // An all-zero chunk (a third of a typical disk) needs no hashing: its digest is that
        // of zeros of its length, computed once. The others are hashed in parallel.
        let found = Locked([(digest: [UInt8], zero: Bool)](repeating: ([], true), count: chunks.count))
        let known = slices
        DispatchQueue.concurrentPerform(iterations: chunks.count) { i in
            var zero = true
            var d: [UInt8]
            if let s = known[i] {
                let b = UnsafeRawBufferPointer(rebasing: buffer.bytes[s])
                zero = isAllZero(b)
                d = zero ? [] : digestKind.digest(b)
            } else {
                d = []
            }
            if zero { d = zeroDigest(count: ranges[i].count) }
            found.withLock { $0[i] = (d, zero) }
        }
        let results = found.current
        for i in chunks.indices where results[i].zero { slices[i] = nil }
        return PreparedBatch(chunks: chunks, slices: slices, digests: results.map(\.digest), buffer: buffer,
                             bytes: ranges.reduce(0) { $0 + UInt64($1.count) })
    }

    /// Writes a prepared batch to the replacement (not synced, not recorded); its buffer goes
    /// back to the pool.
    private func write(_ batch: PreparedBatch) throws -> UInt64 {
        defer { giveBack(batch.buffer) }
        let chunks = batch.chunks
        let failure = Locked<(any Error)?>(nil)
        DispatchQueue.concurrentPerform(iterations: chunks.count) { i in
            do {
                let r = chunkRange(chunks[i])
                if let s = batch.slices[i] {
                    try data.write(at: r.lowerBound, from: UnsafeRawBufferPointer(rebasing: batch.buffer.bytes[s]))
                } else {
                    try data.zero(at: r.lowerBound, count: UInt64(r.count))
                }
            } catch {
                failure.withLock { $0 = error }
            }
        }
        if let e = failure.current { throw e }
        let batchNumber = runtime.withLock { r -> Int in r.batches += 1; return r.batches }
        options.faults.check(.fillWritten(batchNumber))
        return batch.bytes
    }

    /// Syncs the replacement, then records the pending chunks (the journal synced every
    /// `Options.journalSyncEvery` flushes): a chunk is recorded only once its bytes are durable.
    /// Runs on the fill thread or, with `Options.syncOnThread`, on the sync thread (one at a
    /// time), with batches whose writes all returned before it was called.
    private func flush(_ pending: inout Pending) throws {
        guard !pending.isEmpty else { return }
        try data.sync()
        let flushes = runtime.withLock { r -> Int in r.flushes += 1; return r.flushes }
        let chunks = pending.batches.flatMap(\.chunks), ds = pending.batches.flatMap(\.digests)
        try append(chunks.indices.map { FillJournal.Record(kind: .filled, chunk: UInt64(chunks[$0]), digest: ds[$0]) },
                   sync: flushes % max(1, options.journalSyncEvery) == 0)
        let bytes = pending.bytes
        pending = Pending()
        let filled = state.withLock { s -> Int in
            for (i, c) in chunks.enumerated() { s.digests[c] = ds[i] }
            return s.filledCount
        }
        writtenHere.withLock { w in for c in chunks { w[c] = true } }
        runtime.withLock { $0.copiedChunks += chunks.count; $0.bytesThisRun += bytes }
        options.faults.check(.fillChunk(filled))
    }

    func nextBatchForTesting() -> [Int] { nextBatch(excluding: []) }

    private let zeroDigests = Locked<[Int: [UInt8]]>([:])
    /// The digest of `count` zero bytes (one value per length: the full chunk, the last one).
    func zeroDigest(count: Int) -> [UInt8] {
        if let d = zeroDigests.withLock({ $0[count] }) { return d }
        let d = [UInt8](repeating: 0, count: count).withUnsafeBytes { digestKind.digest($0) }
        zeroDigests.withLock { $0[count] = d }
        return d
    }

    /// Appends records to the journal and syncs it (`sync: false`: later, see
    /// `Options.journalSyncEvery`; only for `filled` records, written after their data sync).
    private func append(_ records: [FillJournal.Record], sync: Bool = true) throws {
        let bytes = records.flatMap(FillJournal.encode)
        try journalLength.withLock { len in
            try journal.write(at: len, bytes)
            len += UInt64(bytes.count)
            if sync {
                try journal.sync()
                journalUnsynced.withLock { $0 = 0 }
            } else {
                journalUnsynced.withLock { $0 += bytes.count }
            }
        }
    }

    /// Syncs deferred journal records, if any.
    private func syncJournal() throws {
        try journalLength.withLock { _ in
            guard journalUnsynced.current > 0 else { return }
            try journal.sync()
            journalUnsynced.withLock { $0 = 0 }
        }
    }

    /// Compares every chunk of the replacement with the digest recorded from the stream; a
    /// chunk that differs is invalidated (recorded) and will be copied again. Returns how many
    /// differed. A chunk recorded by an earlier process is read back and hashed; one this
    /// process wrote and synced is verified from the bytes it wrote (the recorded digest is
    /// theirs), unless `Options.readBack` is `.all`.
    private func verify() throws -> Int {
        runtime.withLock { $0.verifying = true }
        defer { runtime.withLock { $0.verifying = false } }
        try syncJournal()
        let trusted = options.readBack == .all ? Array(repeating: false, count: chunkCount) : writtenHere.current
        // In groups read and hashed in parallel (as the fill reads), then checked in order.
        var bad: [Int] = []
        var checked = 0
        let group = max(1, Int(options.batchBytes / chunkSize))
        var first = 0
        while first < chunkCount {
            if stopRequested { return 0 }
            let chunks = Array(first..<min(first + group, chunkCount))
            let found = Locked([[UInt8]?](repeating: nil, count: chunks.count))
            let failure = Locked<(any Error)?>(nil)
            let recorded = state.withLock { s in chunks.map { s.digests[$0] } }
            DispatchQueue.concurrentPerform(iterations: chunks.count) { i in
                do {
                    if trusted[chunks[i]] {
                        found.withLock { $0[i] = recorded[i] }
                        return
                    }
                    let r = chunkRange(chunks[i])
                    let buf = try data.read(at: r.lowerBound, count: r.count)
                    let d = buf.withUnsafeBytes { digestKind.digest($0) }
                    found.withLock { $0[i] = d }
                } catch {
                    failure.withLock { $0 = error }
                }
            }
            if let e = failure.current { throw e }
            let digests = found.current
            for (i, c) in chunks.enumerated() {
                if recorded[i] != digests[i] { bad.append(c) }
                checked += 1
                runtime.withLock { $0.verifiedChunks = checked }
                options.faults.check(.verify(checked))
            }
            first += group
        }
        if !bad.isEmpty {
            try append(bad.map { FillJournal.Record(kind: .invalidated, chunk: UInt64($0)) })
            state.withLock { s in for c in bad { s.digests[c] = nil } }
            writtenHere.withLock { w in for c in bad { w[c] = false } }
        }
        return bad.count
    }

    private func yieldToGuest() {
        // A guest read in the last 10 ms: give it the backup for a while (at most 200 ms).
        var waited = 0.0
        while waited < 0.2, monotonicSeconds() - runtime.withLock({ $0.lastGuestRead }) < 0.01, !stopRequested {
            usleep(5000)
            waited += 0.005
        }
    }

    private func throttle() {
        guard let rate = options.rateLimit, rate > 0 else { return }
        while !stopRequested {
            let (start, bytes) = runtime.withLock { ($0.startedAt, $0.bytesThisRun) }
            let due = Double(bytes) / Double(rate) - (monotonicSeconds() - start)
            if due <= 0 { return }
            usleep(UInt32(min(due, 0.05) * 1_000_000))
            writeStatusFile()
        }
    }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func isAllZero(_ b: UnsafeRawBufferPointer) -> Bool {
    var i = 0
    let n = b.count
    while i + 8 <= n {
        if b.loadUnaligned(fromByteOffset: i, as: UInt64.self) != 0 { return false }
        i += 8
    }
    while i < n { if b[i] != 0 { return false }; i += 1 }
    return true
}
