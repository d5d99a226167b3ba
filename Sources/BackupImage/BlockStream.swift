import BlockCore
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Per-thread buffers for decoding blocks one after another without allocating: the stored
/// bytes and the decrypted-but-still-compressed bytes. Grown on demand, never shrunk.
/// @unchecked Sendable: used by one thread at a time; the reader's pool hands it over under a lock.
final class BlockScratch: @unchecked Sendable {
    private var storedBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    private var openedBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    deinit {
        storedBuffer.deallocate()
        openedBuffer.deallocate()
    }

    private static func ensure(_ b: inout UnsafeMutableRawBufferPointer, _ n: Int) -> UnsafeMutableRawBufferPointer {
        if b.count < n {
            b.deallocate()
            b = .allocate(byteCount: max(n, 64 << 10), alignment: 64)
        }
        return UnsafeMutableRawBufferPointer(rebasing: b[0..<n])
    }

    func stored(_ n: Int) -> UnsafeMutableRawBufferPointer { Self.ensure(&storedBuffer, n) }
    func opened(_ n: Int) -> UnsafeMutableRawBufferPointer { Self.ensure(&openedBuffer, n) }
}

extension BackupImageReader {
    /// Decodes every block the chain holds (local or vault; zero and absent blocks are skipped:
    /// they read as zeros) with `threads` workers, and hands each verified plaintext to `body`
    /// with its virtual offset. Made for whole-image readers such as restore:
    /// - blocks bypass the LRU cache (each is wanted once; caching them would only evict the
    ///   blocks random readers keep there) and the read-ahead;
    /// - every worker reuses its own output and scratch buffers (no allocation per block);
    /// - every block gets the same checks as `read(at:into:)` (CRC-32C, then GCM tag or SHA-256).
    ///
    /// `body` runs on worker threads, concurrently and in no particular order, and must not keep
    /// the buffer. On failure no new block is started and the error of the lowest failing block
    /// is thrown (the one a sequential reader would have met first).
    public func forEachStoredBlock(threads: Int = BackupImageReader.defaultDecodeThreads,
                                   _ body: @Sendable (_ offset: UInt64, _ plaintext: UnsafeRawBufferPointer) throws -> Void) throws {
        var work: [Int] = []
        for i in 0..<blockCount {
            if let (_, k) = locate(i), k == .local || k == .vault { work.append(i) }
        }
        let list = work
        let next = Atomic<Int>(0)
        let failure = Locked<(block: Int, error: any Error)?>(nil)
        let workers = max(1, min(threads, list.count))
        let bs = blockSize
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            let out = UnsafeMutableRawBufferPointer.allocate(byteCount: bs, alignment: 4096)
            defer { out.deallocate() }
            let scratch = BlockScratch()
            while failure.current == nil {
                let w = next.wrappingAdd(1, ordering: .relaxed).oldValue
                guard w < list.count else { break }
                let i = list[w]
                do {
                    let plain = UnsafeMutableRawBufferPointer(rebasing: out[0..<plainLength(ofBlock: i)])
                    try locate(i)!.reader.decodeOwnBlock(i, into: plain, scratch: scratch)
                    try body(UInt64(i) * UInt64(bs), UnsafeRawBufferPointer(plain))
                } catch {
                    failure.withLock { f in if f == nil || f!.block > i { f = (i, error) } }
                }
            }
        }
        if let f = failure.current { throw f.error }
    }

    /// Decode workers for whole-image reads: one per online processor, at most 8.
    public static var defaultDecodeThreads: Int { max(1, min(8, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))) }
}
