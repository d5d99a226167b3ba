import Testing
import Foundation
import TestSupport
@testable import BlockCore
@testable import Exposure
#if canImport(Glibc)
import Glibc
#endif

/// The NBD source with many requests in flight per connection (issue 16's benchmark goal): a
/// large read split into requests issued together, many readers at once, each getting its own
/// bytes; and the bounded waits still hold when a hanging source has several readers waiting on
/// the same connection (every one gets the timeout; the connection closes once nobody's buffer
/// is still a request's target). Real nbdkit (its C `file` and `sh` plugins), real libnbd.
@Suite(.requires(missing: toolsMissing(["nbdkit"]))) struct NBDSourceConcurrencyTests {
    @Test func manyRequestsInFlightReadTheirOwnBytes() throws {
        let s = Scratch()
        let size = 12 << 20
        var b = Bytes(seed: 1616)
        let data = b.bytes(size)
        let f = try RawFile.create(path: s.file("data.img"), size: UInt64(size))
        try f.write(at: 0, data)
        try f.flush()
        let source = try #require(try ExternalSource.open(BackupSourceSpec(kind: .nbdkit, argv: ["file", "file=" + s.file("data.img")]),
                                                          directory: s.dir("plug"), timeout: 20) as? NBDSource)
        // One 8 MiB read: 8 requests of 1 MiB issued together on one connection.
        #expect(try source.read(at: 1 << 20, count: 8 << 20) == Array(data[(1 << 20)..<(9 << 20)]))
        #expect(source.peakRequestsInFlight >= 8, "peak \(source.peakRequestsInFlight)")

        // 64 readers at once, odd offsets and lengths (1 byte to 3 MiB): each gets its own bytes.
        let wrong = Locked<[String]>([])
        onThreads(64) { i in
            var r = Bytes(seed: UInt64(i) + 7)
            let length = i % 8 == 0 ? 1 + Int(r.next() % (3 << 20)) : 1 + Int(r.next() % (256 << 10))
            let offset = Int(r.next() % UInt64(size - length))
            do {
                let got = try source.read(at: UInt64(offset), count: length)
                if got != Array(data[offset..<(offset + length)]) { wrong.withLock { $0.append("read \(i): \(length) at \(offset) differs") } }
            } catch {
                wrong.withLock { $0.append("read \(i): \(error)") }
            }
        }
        #expect(wrong.current.isEmpty, "\(wrong.current)")
    }

    @Test func readersWaitingOnAHangingSourceAllTimeOut() throws {
        let s = Scratch()
        let plug = s.dir("plug")
        let vol = try RawFile.create(path: plug + "/vol.img", size: 1 << 20)
        try vol.flush()
        // nbdkit's sh plugin running a script whose pread never answers (in parallel: every
        // request sits in the server, several per connection).
        let script = plug + "/hangs.sh"
        let text = """
        #!/bin/sh
        case "$1" in
          get_size) echo 1048576 ;;
          pread) sleep 30 ;;
          can_write) exit 3 ;;
          thread_model) echo parallel ;;
          *) exit 2 ;;
        esac
        """
        try writeExecutable(script, text)

        let source = try ExternalSource.open(BackupSourceSpec(kind: .nbdkit, argv: ["sh", "./hangs.sh"]), directory: plug, timeout: 2)
        let start = NBDSource.now
        let errors = Locked<[String]>([])
        onThreads(12) { i in
            do {
                _ = try source.read(at: UInt64(i) * 4096, count: i % 3 == 0 ? 300_000 : 4096)
                errors.withLock { $0.append("read \(i) succeeded") }
            } catch {
                errors.withLock { $0.append("\(error)") }
            }
        }
        let elapsed = NBDSource.now - start
        #expect(elapsed < 15, "took \(elapsed) s")
        #expect(errors.current.count == 12)
        #expect(!errors.current.contains { $0.hasSuffix("succeeded") }, "\(errors.current)")
        #expect(errors.current.contains { $0.contains("did not complete within 2 s") }, "\(errors.current)")
        // Afterwards the source refuses at once.
        let t0 = NBDSource.now
        #expect(throws: SourceError.self) { _ = try source.read(at: 0, count: 512) }
        #expect(NBDSource.now - t0 < 1)
    }
}

/// Runs `body(0..<n)` on `n` threads at once (GCD's concurrentPerform runs only as many at a
/// time as there are cores: two here), and returns when all have ended.
private func onThreads(_ n: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for i in 0..<n {
        group.enter()
        Thread { body(i); group.leave() }.start()
    }
    group.wait()
}
