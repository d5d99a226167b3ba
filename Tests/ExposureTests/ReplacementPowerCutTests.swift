import Testing
import Foundation
import TestSupport
@testable import BlockCore
@testable import Exposure

/// A file that keeps only what was synced: writes since the last `sync()` vanish at `powerCut()`,
/// and after `failAfterSyncs` syncs every further sync fails (the moment the power goes).
final class LossyFile: DurableFile, @unchecked Sendable {
    let path: String
    private let lock = NSLock()
    private var durable: [UInt8] = []
    private var current: [UInt8] = []
    var syncs = 0
    var failAfterSyncs = Int.max
    private var writes = 0
    /// Called inside `sync()` after it has taken what it makes durable (the writes that returned
    /// before it began) and before that is durable: writes made meanwhile, on other threads, are
    /// not covered by this sync — the strictest reading of fdatasync for concurrent writes.
    var duringSync: (@Sendable () -> Void)?
    var writeCount: Int { lock.lock(); defer { lock.unlock() }; return writes }

    init(path: String) { self.path = path }

    struct PowerGone: Error {}

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        lock.lock(); defer { lock.unlock() }
        for i in 0..<buffer.count {
            let at = Int(offset) + i
            buffer[i] = at < current.count ? current[at] : 0
        }
    }
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        lock.lock(); defer { lock.unlock() }
        writes += 1
        let end = Int(offset) + buffer.count
        if current.count < end { current += [UInt8](repeating: 0, count: end - current.count) }
        current.replaceSubrange(Int(offset)..<end, with: buffer)
    }
    func zero(at offset: UInt64, count: UInt64) throws {
        let zeros = [UInt8](repeating: 0, count: Int(count))
        try zeros.withUnsafeBytes { try write(at: offset, from: $0) }
    }
    func size() throws -> UInt64 { lock.lock(); defer { lock.unlock() }; return UInt64(current.count) }
    func truncate(to size: UInt64) throws {
        lock.lock(); defer { lock.unlock() }
        if current.count > Int(size) { current.removeLast(current.count - Int(size)) } else {
            current += [UInt8](repeating: 0, count: Int(size) - current.count)
        }
    }
    func sync() throws {
        lock.lock()
        syncs += 1
        if syncs > failAfterSyncs { lock.unlock(); throw PowerGone() }
        let covered = current
        let hook = duringSync
        lock.unlock()
        hook?()
        lock.lock()
        durable = covered
        lock.unlock()
    }
    /// Drops everything not synced and brings the power back.
    func powerCut() {
        lock.lock(); defer { lock.unlock() }
        current = durable
        failAfterSyncs = Int.max
    }
}

/// Counts the reads of a file whose bytes the materializer reads back at verification.
final class ReadCountingFile: DurableFile, @unchecked Sendable {
    let inner: LossyFile
    let reads = Locked<[UInt64]>([])
    init(_ inner: LossyFile) { self.inner = inner }
    var path: String { inner.path }
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        reads.withLock { $0.append(offset) }
        try inner.read(at: offset, into: buffer)
    }
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws { try inner.write(at: offset, from: buffer) }
    func zero(at offset: UInt64, count: UInt64) throws { try inner.zero(at: offset, count: count) }
    func size() throws -> UInt64 { try inner.size() }
    func truncate(to size: UInt64) throws { try inner.truncate(to: size) }
    func sync() throws { try inner.sync() }
}

@Suite struct ReplacementPowerCutTests {
    /// Verification reads back exactly the chunks an earlier process recorded (once each); the
    /// chunks this process wrote and synced are verified from the bytes it wrote. `.all` reads
    /// every chunk back. Either way the replacement ends as the stream, and the journal's
    /// deferred `filled` records (synced every few batches) are all durable once the fill ends.
    @Test func verificationReadsBackOnlyWhatAnEarlierProcessRecorded() throws {
        let f = try ReplacementFixture()
        let plugin = try f.image()
        var expected = try f.stream()
        for i in 0..<8 { expected[i] = 0 }
        for readBack in [Materializer.Options.ReadBack.recordedEarlier, .all] {
            let data = LossyFile(path: f.s.file("r\(readBack)")), journal = LossyFile(path: f.s.file("j\(readBack)"))
            let a = try Materializer(plugin: plugin, data: data, journal: journal, options: ReplacementFixture.options(stopAfter: plugin.size / 3))
            try a.run()
            let earlier = a.filledChunks
            #expect(earlier > 0 && earlier < a.chunkCount)
            var o = ReplacementFixture.options()
            o.readBack = readBack
            o.syncBytes = 3 * o.batchBytes
            o.journalSyncEvery = 3
            let counting = ReadCountingFile(data)
            let b = try Materializer(plugin: plugin, data: counting, journal: journal, options: o)
            try b.run()
            #expect(b.isComplete)
            #expect(b.copiedChunks == b.chunkCount - earlier)
            let readChunks = counting.reads.current.map { Int($0 / b.chunkSize) }
            #expect(Set(readChunks).count == readChunks.count, "a chunk read back twice")
            #expect(readChunks.count == (readBack == .all ? b.chunkCount : earlier), "\(readBack): read back \(readChunks.count) chunks")
            if readBack == .recordedEarlier {
                let recordedByA = a.state.current.digests
                #expect(readChunks.allSatisfy { recordedByA[$0] != nil }, "read back a chunk this process wrote")
            }
            #expect(try data.read(at: 0, count: expected.count) == expected)
            // Everything the journal says survives a power cut now that the fill has ended.
            data.powerCut()
            journal.powerCut()
            let c = try Materializer(plugin: plugin, data: data, journal: journal, options: ReplacementFixture.options())
            #expect(c.isComplete && c.filledChunks == c.chunkCount)
        }
    }


    /// The power goes at many moments of a fill (between any two syncs, with writes made and not
    /// synced): each restart over what was durable resumes, never serves an unfilled range as
    /// filled, never copies a chunk that was recorded again, and ends with the stream's bytes.
    @Test func aPowerCutAtAnySyncLeavesAResumableStateThatNeverLies() throws {
        let f = try ReplacementFixture()
        let stream = try f.stream()
        var expected = stream
        for i in 0..<8 { expected[i] = 0 }
        let plugin = try f.image()
        var o = ReplacementFixture.options(chunk: 256 << 10)
        o.batchBytes = 512 << 10
        o.syncBytes = 1 << 20
        for cutAfter in [1, 2, 3, 4, 6, 9, 14, 20, 27, 35] {
            let data = LossyFile(path: f.s.file("r\(cutAfter)")), journal = LossyFile(path: f.s.file("j\(cutAfter)"))
            data.failAfterSyncs = cutAfter
            journal.failAfterSyncs = cutAfter
            var complete = false
            do {
                let m = try Materializer(plugin: plugin, data: data, journal: journal, options: o)
                try m.run()
                complete = m.isComplete
            } catch is LossyFile.PowerGone {}
            data.powerCut()
            journal.powerCut()
            // After the power comes back: every chunk the journal names holds its bytes.
            let m = try Materializer(plugin: plugin, data: data, journal: journal, options: o)
            let recorded = m.filledChunks
            for c in 0..<m.chunkCount where m.state.withLock({ $0.digests[c] != nil }) {
                let r = m.chunkRange(c)
                #expect(try data.read(at: r.lowerBound, count: r.count) == Array(expected[Int(r.lowerBound)..<Int(r.upperBound)]),
                        "cut after \(cutAfter) syncs: chunk \(c) recorded but not durable")
            }
            #expect(try m.read(at: 0, count: stream.count) == stream)
            try m.run()
            #expect(m.isComplete)
            #expect(m.copiedChunks == m.chunkCount - recorded, "cut after \(cutAfter): recorded chunks copied again")
            #expect(try data.read(at: 0, count: expected.count) == expected)
            _ = complete
        }
    }

    /// The data sync runs on its own thread while the fill writes the next batches
    /// (`Options.syncOnThread`). Each data sync here waits until the fill thread has written
    /// another batch, and covers only what was written before it began; the power goes after
    /// 1…6 syncs. The journal must never name a chunk written during the sync that recorded it
    /// (a sync records only the batches handed to it, all written before it began): every
    /// recorded chunk holds its bytes after the cut, the restart copies exactly the unrecorded
    /// chunks and ends with the stream. The fill did write during the syncs (counted over the
    /// runs), and with the sync on the fill thread it never does (the hook sees no write meanwhile).
    @Test func aPowerCutWhileTheSyncThreadSyncsNeverRecordsWhatTheSyncDidNotCover() throws {
        let f = try ReplacementFixture()
        let stream = try f.stream()
        var expected = stream
        for i in 0..<8 { expected[i] = 0 }
        let plugin = try f.image()
        var o = ReplacementFixture.options(chunk: 256 << 10)
        o.batchBytes = 512 << 10
        o.syncBytes = 1 << 20
        let overlappedOnThread = Locked(0)
        for (cutAfter, onThread) in [(1, true), (2, true), (3, true), (4, true), (6, true), (100, true), (100, false)] {
            o.syncOnThread = onThread
            let data = LossyFile(path: f.s.file("rt\(cutAfter)\(onThread)")), journal = LossyFile(path: f.s.file("jt\(cutAfter)\(onThread)"))
            let m = try Materializer(plugin: plugin, data: data, journal: journal, options: o)
            let overlapped = Locked(0), alone = Locked(0)
            // The fresh replacement's own syncs are done; from here each data sync waits for a
            // write of the fill thread that it will not cover: up to 2 s on the sync thread (a
            // loaded machine prepares a batch slowly; only the last hand-off waits in vain),
            // 0.1 s on the fill thread (which cannot write while it syncs).
            data.failAfterSyncs = data.syncs + cutAfter
            journal.failAfterSyncs = journal.syncs + cutAfter
            // `run()` fills on this thread (thread names are no help: Linux keeps 15 bytes of them).
            let fillThread = pthread_self()
            data.duringSync = { [data] in
                let limit = pthread_equal(pthread_self(), fillThread) != 0 ? 0.1 : 2.0
                let before = data.writeCount, t0 = monotonicSeconds()
                while data.writeCount == before && monotonicSeconds() - t0 < limit { usleep(500) }
                if data.writeCount > before { overlapped.withLock { $0 += 1 } } else { alone.withLock { $0 += 1 } }
            }
            var cut = false
            do { try m.run() } catch is LossyFile.PowerGone { cut = true }
            data.duringSync = nil
            if onThread {
                // Per run it depends on timing (the fill thread may write the next hand-off's
                // batches before the sync thread has even begun); over the six runs it must happen.
                overlappedOnThread.withLock { $0 += overlapped.current }
            } else {
                #expect(overlapped.current == 0 && alone.current > 0, "inline: a batch was written during a data sync")
            }
            #expect(cut == (cutAfter < 100), "cut after \(cutAfter): the power cut did not end the fill")
            data.powerCut()
            journal.powerCut()
            let r = try Materializer(plugin: plugin, data: data, journal: journal, options: o)
            let recorded = r.filledChunks
            if cutAfter < 100 { #expect(recorded < r.chunkCount, "cut after \(cutAfter): nothing left to copy") }
            for c in 0..<r.chunkCount where r.state.withLock({ $0.digests[c] != nil }) {
                let range = r.chunkRange(c)
                #expect(try data.read(at: range.lowerBound, count: range.count) == Array(expected[Int(range.lowerBound)..<Int(range.upperBound)]),
                        "cut after \(cutAfter): chunk \(c) recorded but not durable")
            }
            #expect(try r.read(at: 0, count: stream.count) == stream)
            try r.run()
            #expect(r.isComplete)
            #expect(r.copiedChunks == r.chunkCount - recorded, "cut after \(cutAfter): recorded chunks copied again")
            #expect(try data.read(at: 0, count: expected.count) == expected)
        }
        #expect(overlappedOnThread.current > 0, "no batch was written while a data sync ran on the sync thread")
    }

    /// A replacement damaged behind the journal's back is caught by verification and refilled.
    /// With either digest kind; the second run asks for the other kind and keeps the journal's.
    @Test(arguments: FillJournal.DigestKind.allCases)
    func verificationRefillsAChunkThatDiffersFromItsDigest(kind: FillJournal.DigestKind) throws {
        let f = try ReplacementFixture()
        let plugin = try f.image()
        let data = LossyFile(path: f.s.file("r")), journal = LossyFile(path: f.s.file("j"))
        // A first run with a budget of the whole file stops once every chunk is filled, before
        // the verification pass; then a recorded chunk is damaged.
        var first = ReplacementFixture.options(stopAfter: plugin.size)
        first.digest = kind
        let a = try Materializer(plugin: plugin, data: data, journal: journal, options: first)
        #expect(a.digestKind == kind)
        try a.run()
        // The recorded digests are the kind's digest of the stream's chunks.
        var stream = try f.stream()
        for i in 0..<8 { stream[i] = 0 }
        for c in [0, 3, a.chunkCount - 1] {
            let r = a.chunkRange(c)
            let want = Array(stream[Int(r.lowerBound)..<Int(r.upperBound)]).withUnsafeBytes { kind.digest($0) }
            #expect(a.state.current.digests[c] == want, "chunk \(c): recorded digest is not the \(kind) of its bytes")
        }
        #expect(a.filledChunks == a.chunkCount && !a.isComplete)
        try data.write(at: 3 * a.chunkSize + 100, [0xEE, 0xEE])
        try data.sync()
        let state = try FillJournal.replay(try journal.read(at: 0, count: Int(try journal.size())), path: "j", fileSize: plugin.size)
        // Every `filled` record stays (the damaged chunk is one an earlier process recorded);
        // a `verified` and `switched` pair, if the run got that far, goes.
        var keep = state.validLength
        if state.switched { keep = state.validLength - 2 * UInt64(FillJournal.recordLength) }
        try journal.truncate(to: keep)
        try journal.sync()
        var second = ReplacementFixture.options()
        second.digest = kind == .sha256 ? .crc32c : .sha256
        let b = try Materializer(plugin: plugin, data: data, journal: journal, options: second)
        #expect(b.digestKind == kind, "a resumed fill keeps its journal's digest kind")
        try b.run()
        #expect(b.isComplete)
        #expect(b.copiedChunks == 1, "\(kind): the damaged chunk (only) is copied again")
        var expected = try f.stream()
        for i in 0..<8 { expected[i] = 0 }
        #expect(try data.read(at: 0, count: expected.count) == expected)
    }
}
