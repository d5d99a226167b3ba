import Synchronization

/// Counters shared by every `CountingSource` wrapping one underlying source, plus the number of
/// times that source was opened. Tests and `--stats` read them to prove deferred open (a `stat`
/// must leave `opens` at 0) and to measure how many bytes a front-end pulled from below.
public final class SourceCounters: Sendable {
    public let name: String
    private let _opens = Atomic<UInt64>(0)
    private let _reads = Atomic<UInt64>(0)
    private let _bytesRead = Atomic<UInt64>(0)
    private let _writes = Atomic<UInt64>(0)
    private let _bytesWritten = Atomic<UInt64>(0)
    private let _extentQueries = Atomic<UInt64>(0)
    private let _flushes = Atomic<UInt64>(0)
    private let _fileBackedReads = Atomic<UInt64>(0)
    private let _fileBackedBytes = Atomic<UInt64>(0)
    private let _passthroughOpens = Atomic<UInt64>(0)

    private let backupProvider = Mutex<(@Sendable () -> BackupCounts)?>(nil)

    public init(name: String) { self.name = name }

    /// Links the counters of the backup behind this source (opened lazily, perhaps never), so
    /// `--stats` can show that metadata reads did not open it.
    public func attachBackup(_ provider: @escaping @Sendable () -> BackupCounts) {
        backupProvider.withLock { $0 = provider }
    }

    public func recordOpen() { _opens.add(1, ordering: .relaxed) }
    func recordRead(_ n: Int) {
        _reads.add(1, ordering: .relaxed)
        _bytesRead.add(UInt64(n), ordering: .relaxed)
    }
    func recordWrite(_ n: Int) {
        _writes.add(1, ordering: .relaxed)
        _bytesWritten.add(UInt64(n), ordering: .relaxed)
    }
    func recordFileBacked(_ n: Int, fileBytes: UInt64) {
        _reads.add(1, ordering: .relaxed)
        _bytesRead.add(UInt64(n), ordering: .relaxed)
        _fileBackedReads.add(1, ordering: .relaxed)
        _fileBackedBytes.add(fileBytes, ordering: .relaxed)
    }
    /// An open the kernel serves from the backing file itself (FUSE passthrough): its reads are
    /// not seen here, so they are not in `reads`.
    public func recordPassthroughOpen() { _passthroughOpens.add(1, ordering: .relaxed) }
    func recordExtents() { _extentQueries.add(1, ordering: .relaxed) }
    func recordFlush() { _flushes.add(1, ordering: .relaxed) }

    public var snapshot: SourceStatistics {
        SourceStatistics(
            name: name,
            opens: _opens.load(ordering: .relaxed),
            reads: _reads.load(ordering: .relaxed),
            bytesRead: _bytesRead.load(ordering: .relaxed),
            writes: _writes.load(ordering: .relaxed),
            bytesWritten: _bytesWritten.load(ordering: .relaxed),
            extentQueries: _extentQueries.load(ordering: .relaxed),
            flushes: _flushes.load(ordering: .relaxed),
            fileBackedReads: _fileBackedReads.load(ordering: .relaxed),
            fileBackedBytes: _fileBackedBytes.load(ordering: .relaxed),
            passthroughOpens: _passthroughOpens.load(ordering: .relaxed),
            backup: backupProvider.withLock { $0 }?()
        )
    }

    /// Opens a source through `open`, counting the open, and wraps it so its traffic is counted.
    public func open<S: BlockSource>(_ open: () throws -> S) rethrows -> CountingSource {
        let s = try open()
        recordOpen()
        return CountingSource(s, counters: self)
    }
}

/// A point-in-time copy of `SourceCounters` (the JSON of `--stats`).
public struct SourceStatistics: Sendable, Codable, Equatable {
    public var name: String
    public var opens: UInt64
    public var reads: UInt64
    public var bytesRead: UInt64
    public var writes: UInt64
    public var bytesWritten: UInt64
    public var extentQueries: UInt64
    public var flushes: UInt64
    /// Reads answered by naming the backing file instead of copying its bytes (`FileBackedSource`:
    /// a FUSE splice, a kernel copy), and the file bytes among them; also counted in `reads` and
    /// `bytesRead`.
    public var fileBackedReads: UInt64 = 0
    public var fileBackedBytes: UInt64 = 0
    /// Opens served by the kernel from the backing file (FUSE passthrough); their reads bypass
    /// this process and are in no other counter.
    public var passthroughOpens: UInt64 = 0
    /// The backup's own counters, when the source is a plugin file's disk.
    public var backup: BackupCounts? = nil
}

/// A pass-through layer that counts reads, bytes, extent queries and writes of the source below
/// (nbdkit's `stats` filter is the model). Writable when the wrapped source is.
public final class CountingSource: WritableBlockSource, FileBackedSource {
    public let base: any BlockSource
    public let counters: SourceCounters

    public init(_ base: any BlockSource, counters: SourceCounters) {
        self.base = base
        self.counters = counters
    }

    public var size: UInt64 { base.size }
    public var isWritable: Bool { base is any WritableBlockSource }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try base.read(at: offset, into: buffer)
        counters.recordRead(buffer.count)
    }

    /// The base's spans, when its bytes are a file's; their file bytes count as one read here
    /// (nobody calls `read` for them: a FUSE splice or a kernel copy moves them).
    public func fileSpans(in range: Range<UInt64>) -> [FileSpan]? {
        guard let spans = (base as? any FileBackedSource)?.fileSpans(in: range) else { return nil }
        let n = spans.reduce(0 as UInt64) { if case let .file(_, _, k) = $1 { return $0 + k } else { return $0 } }
        counters.recordFileBacked(Int(range.count), fileBytes: n)
        return spans
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        counters.recordExtents()
        return try base.extents(in: range)
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        guard let w = base as? any WritableBlockSource else { throw BlockSourceError.readOnly(counters.name) }
        try w.write(at: offset, from: buffer)
        counters.recordWrite(buffer.count)
    }

    public func flush() throws {
        guard let w = base as? any WritableBlockSource else { return }
        try w.flush()
        counters.recordFlush()
    }
}

/// What the backup reader below a served source did (a copy of its statistics).
public struct BackupCounts: Sendable, Codable, Equatable {
    public var opens: UInt64
    public var bytesRead: UInt64
    public var blocksDecoded: UInt64
    public var cacheHits: UInt64
    public var cacheMisses: UInt64
    public init(opens: UInt64, bytesRead: UInt64, blocksDecoded: UInt64, cacheHits: UInt64, cacheMisses: UInt64) {
        self.opens = opens
        self.bytesRead = bytesRead
        self.blocksDecoded = blocksDecoded
        self.cacheHits = cacheHits
        self.cacheMisses = cacheMisses
    }
}
