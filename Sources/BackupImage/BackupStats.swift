import Synchronization

/// Counters of backup-file activity, so callers and tests can see deferred open and caching at
/// work. Every reader has its own (shared along its parent chain) and also feeds `process`.
public final class BackupStats: Sendable {
    public struct Snapshot: Sendable, Hashable, Codable {
        public var opens: UInt64
        public var bytesRead: UInt64
        public var blocksDecoded: UInt64
        public var cacheHits: UInt64
        public var cacheMisses: UInt64
        public var readAheadBlocks: UInt64
    }

    private let _opens = Atomic<UInt64>(0)
    private let _bytesRead = Atomic<UInt64>(0)
    private let _blocksDecoded = Atomic<UInt64>(0)
    private let _cacheHits = Atomic<UInt64>(0)
    private let _cacheMisses = Atomic<UInt64>(0)
    private let _readAhead = Atomic<UInt64>(0)
    private let parent: BackupStats?

    /// Totals over every reader of this process.
    public static let process = BackupStats(parent: nil)

    public convenience init() { self.init(parent: .process) }
    private init(parent: BackupStats?) { self.parent = parent }

    /// `package`: an external source (Exposure's `ExternalSource`) counts its opens and reads here too.
    package func addOpen() { _opens.add(1, ordering: .relaxed); parent?.addOpen() }
    package func addBytesRead(_ n: Int) { _bytesRead.add(UInt64(n), ordering: .relaxed); parent?.addBytesRead(n) }
    func addDecoded() { _blocksDecoded.add(1, ordering: .relaxed); parent?.addDecoded() }
    func addHit() { _cacheHits.add(1, ordering: .relaxed); parent?.addHit() }
    func addMiss() { _cacheMisses.add(1, ordering: .relaxed); parent?.addMiss() }
    func addReadAhead() { _readAhead.add(1, ordering: .relaxed); parent?.addReadAhead() }

    public var opens: UInt64 { _opens.load(ordering: .relaxed) }
    public var bytesRead: UInt64 { _bytesRead.load(ordering: .relaxed) }
    public var blocksDecoded: UInt64 { _blocksDecoded.load(ordering: .relaxed) }
    public var cacheHits: UInt64 { _cacheHits.load(ordering: .relaxed) }
    public var cacheMisses: UInt64 { _cacheMisses.load(ordering: .relaxed) }
    public var readAheadBlocks: UInt64 { _readAhead.load(ordering: .relaxed) }

    public var snapshot: Snapshot {
        Snapshot(opens: opens, bytesRead: bytesRead, blocksDecoded: blocksDecoded,
                 cacheHits: cacheHits, cacheMisses: cacheMisses, readAheadBlocks: readAheadBlocks)
    }
}
