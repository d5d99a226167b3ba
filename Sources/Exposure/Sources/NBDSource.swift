import BlockCore
import CNBD
#if canImport(Glibc)
import Glibc
#endif

/// A block source read over NBD through libnbd (the protocol, handshake and replies are
/// libnbd's; nothing here parses server bytes). Every wait is bounded: the connection and each
/// read use libnbd's asynchronous calls with a deadline, so a server that hangs gives
/// `SourceError.readTimeout`/`.connect` instead of a hang.
///
/// Up to `maxConnections` connections, and **many requests in flight on each** (libnbd allows
/// it; nbdkit answers them in parallel unless the plugin serializes): concurrent reads go to the
/// least busy connection, and a read larger than `chunk` is split into requests issued together.
/// One request at a time per connection, as before, left the hop to a fast source idle between
/// requests (docs/benchmarks.md, "External sources"). Memory stays bounded: requests read
/// straight into the caller's buffer; nothing is queued or copied here.
///
/// On each connection, one waiting reader at a time polls the socket for everyone (`poll(2)` on
/// libnbd's descriptor, outside the connection's lock; libnbd is then told the socket is ready,
/// under it), retires every completed request (`nbd_aio_peek_command_completed`), and wakes
/// only the readers whose requests are all done; when its own are done it hands polling to
/// another waiting reader. Every waiter also wakes after `slice` seconds to look at its deadline.
///
/// A read that times out breaks its connection: requests still in flight would write into
/// their callers' buffers, so every reader with requests on it leaves, and the last to leave
/// closes the handle (which ends them) while the others wait for that — nobody's buffer goes
/// away under a request. The source then fails every later read: a half-dead server is not
/// trusted again.
public final class NBDSource: BlockSource, @unchecked Sendable {
    // @unchecked: each connection's handle and state only under its mutex; `dead` behind its
    // own lock; the rest is immutable.
    public let size: UInt64
    /// What error messages call this source (the spec, not the socket).
    public let name: String
    public let timeout: Double
    private let connections: [Connection]
    private let dead = Locked<Bool>(false)
    /// The server process behind the export, when we started it (kept alive with the source).
    private let server: SourceServer?
    /// Largest request sent at once (NBD servers refuse requests above 32 MiB).
    static let maxRequest = 8 << 20
    /// A read larger than this is split into requests of this size, issued together.
    static let chunk = 1 << 20
    /// Longest a reader sleeps (or polls) before it looks at its deadline again.
    static let slice = 0.05
    /// Connections opened (nbdcopy's default is 4 too).
    public static let maxConnections = 4

    /// One reader's requests on a connection, and how it is woken.
    final class Waiter {
        var pending = 0
        var failure: SourceError?
        let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        init() {
            var attr = pthread_condattr_t()
            pthread_condattr_init(&attr)
            pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
            pthread_cond_init(cond, &attr)
            pthread_condattr_destroy(&attr)
        }
        deinit {
            pthread_cond_destroy(cond)
            cond.deallocate()
        }
    }

    final class Connection: @unchecked Sendable {
        // @unchecked: every field only under `mutex`.
        let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        var handle: OpaquePointer?
        /// A reader is polling this connection's socket.
        var polling = false
        /// A request timed out or the socket failed: readers leave, the last closes the handle.
        var broken = false
        /// Each request in flight: its reader, and what it reads (for error messages).
        var owners: [Int64: (waiter: Waiter, offset: UInt64, length: Int)] = [:]
        /// Readers with requests in flight (handover of polling, wake-ups when broken).
        var waiters: [ObjectIdentifier: Waiter] = [:]
        /// Most requests in flight at once on this connection (tests, benchmarks).
        var peakInFlight = 0

        init(_ h: OpaquePointer) {
            handle = h
            pthread_mutex_init(mutex, nil)
        }
        deinit {
            if let handle { nbd_close(handle) }
            pthread_mutex_destroy(mutex)
            mutex.deallocate()
        }
        func lock() { pthread_mutex_lock(mutex) }
        func unlock() { pthread_mutex_unlock(mutex) }
        func with<T>(_ body: () throws -> T) rethrows -> T { lock(); defer { unlock() }; return try body() }

        /// Sleeps on `w` until signalled or `seconds` have passed (the mutex held on return).
        func wait(_ w: Waiter, seconds: Double) {
            var ts = timespec()
            clock_gettime(CLOCK_MONOTONIC, &ts)
            let ns = Int(ts.tv_nsec) + Int(seconds * 1e9)
            ts.tv_sec += ns / 1_000_000_000
            ts.tv_nsec = ns % 1_000_000_000
            _ = pthread_cond_timedwait(w.cond, mutex, &ts)
        }

        /// Retires every completed request (under the mutex) and wakes the readers it finished.
        func retireCompleted(_ h: OpaquePointer, source: String) {
            while true {
                let cookie = nbd_aio_peek_command_completed(h)
                guard cookie > 0 else { return }
                let r = nbd_aio_command_completed(h, UInt64(cookie))
                guard let o = owners.removeValue(forKey: cookie) else { continue }
                if r < 0, o.waiter.failure == nil {
                    o.waiter.failure = .read(source: source, offset: o.offset, length: o.length, reason: NBDSource.lastError())
                }
                o.waiter.pending -= 1
                if o.waiter.pending == 0 { pthread_cond_signal(o.waiter.cond) }
            }
        }

        /// Wakes every waiting reader (the connection broke, or it was closed).
        func wakeAll() {
            for w in waiters.values { pthread_cond_signal(w.cond) }
        }
    }

    /// Connects to `uri` (nbd://…, nbd+unix://…) within `timeout` seconds.
    public init(uri: String, name: String, timeout: Double, server: SourceServer? = nil) throws {
        self.name = name
        self.timeout = timeout
        self.server = server
        let first = try Self.connect(uri: uri, name: name, timeout: timeout)
        let s = nbd_get_size(first)
        guard s >= 0 else {
            let e = Self.lastError()
            nbd_close(first)
            throw SourceError.connect(source: name, reason: e)
        }
        size = UInt64(s)
        var all = [Connection(first)]
        // The source is only read, and its identity is checked: reads over several connections
        // see the same bytes even where the server does not promise multi-conn consistency
        // (which is about writes and flushes). A server that serializes connections does not
        // complete a second handshake while the first is open: such a connection is dropped
        // after a short wait and the source keeps one.
        let extraTimeout = nbd_can_multi_conn(first) == 1 ? timeout : min(timeout, 2)
        for _ in 1..<Self.maxConnections {
            guard let h = try? Self.connect(uri: uri, name: name, timeout: extraTimeout) else { break }
            all.append(Connection(h))
        }
        connections = all
    }

    /// How many connections reads are spread over.
    public var connectionCount: Int { connections.count }

    static func connect(uri: String, name: String, timeout: Double) throws -> OpaquePointer {
        guard let h = nbd_create() else { throw SourceError.connect(source: name, reason: lastError()) }
        do {
            guard nbd_aio_connect_uri(h, uri) == 0 else { throw SourceError.connect(source: name, reason: lastError()) }
            let deadline = now + timeout
            while nbd_aio_is_connecting(h) != 0 {
                let ms = milliseconds(until: deadline)
                if ms == 0 { throw SourceError.connect(source: name, reason: "handshake did not complete within \(SourceError.seconds(timeout))") }
                if nbd_poll(h, ms) < 0 { throw SourceError.connect(source: name, reason: lastError()) }
            }
            guard nbd_aio_is_ready(h) != 0 else { throw SourceError.connect(source: name, reason: lastError()) }
            // No zeroing of each read buffer by libnbd (a memset of every request, ~5% of the
            // serving process's time): a failed read throws and its buffer is never used, and
            // a read succeeds only once all of it arrived (nbd_pread(3): "all or nothing").
            _ = nbd_set_pread_initialize(h, false)
        } catch {
            nbd_close(h)
            throw error
        }
        return h
    }

    /// The most requests that were in flight at once on one connection (tests, benchmarks).
    public var peakRequestsInFlight: Int {
        connections.map { c in c.with { c.peakInFlight } }.max() ?? 0
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        guard !dead.current else { throw abandoned(offset, buffer.count) }
        // The least busy connection (ties: the first).
        var c = connections[0], least = Int.max
        for k in connections {
            let n = k.with { k.broken || k.handle == nil ? Int.max : k.owners.count }
            if n < least { least = n; c = k }
        }
        let piece = buffer.count > Self.chunk ? Self.chunk : Self.maxRequest
        let w = Waiter()
        let me = ObjectIdentifier(w)

        c.lock()
        defer { c.unlock() }
        guard !c.broken, let h = c.handle, !dead.current else { throw abandoned(offset, buffer.count) }
        var done = 0
        while done < buffer.count {
            let n = min(piece, buffer.count - done)
            let cookie = bl_nbd_aio_pread(h, buffer.baseAddress! + done, n, offset + UInt64(done))
            guard cookie > 0 else {
                // The requests already issued are still in flight into `buffer`: wait for them.
                w.failure = .read(source: name, offset: offset + UInt64(done), length: n, reason: Self.lastError())
                break
            }
            c.owners[cookie] = (w, offset + UInt64(done), n)
            w.pending += 1
            done += n
        }
        c.peakInFlight = max(c.peakInFlight, c.owners.count)
        c.waiters[me] = w

        let deadline = Self.now + timeout
        while w.pending > 0 && !c.broken {
            let ms = Self.milliseconds(until: deadline)
            if ms == 0 {
                c.broken = true
                dead.withLock { $0 = true }
                w.failure = .readTimeout(source: name, offset: offset, length: buffer.count, seconds: timeout)
                c.wakeAll()
                break
            }
            if c.polling {
                c.wait(w, seconds: min(Self.slice, Double(ms) / 1000))
                continue
            }
            // This reader polls for everyone on the connection.
            let fd = nbd_aio_get_fd(h)
            let dir = nbd_aio_get_direction(h)
            guard fd >= 0 else {
                w.failure = w.failure ?? .read(source: name, offset: offset, length: buffer.count, reason: Self.lastError())
                c.broken = true
                c.wakeAll()
                break
            }
            var events: Int16 = 0
            if dir & UInt32(LIBNBD_AIO_DIRECTION_READ) != 0 { events |= Int16(POLLIN) }
            if dir & UInt32(LIBNBD_AIO_DIRECTION_WRITE) != 0 { events |= Int16(POLLOUT) }
            c.polling = true
            c.unlock()
            var p = pollfd(fd: fd, events: events, revents: 0)
            let r = poll(&p, 1, min(ms, Int32(Self.slice * 1000)))
            let pollErrno = errno
            c.lock()
            c.polling = false
            var ok: Int32 = 0
            if r < 0, pollErrno != EINTR {
                ok = -1
            } else if r > 0 {
                if p.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { ok = nbd_aio_notify_read(h) }
                if ok == 0, p.revents & Int16(POLLOUT) != 0 { ok = nbd_aio_notify_write(h) }
            }
            // Requests libnbd failed (a dead connection fails them all) are retired here too.
            c.retireCompleted(h, source: name)
            if ok < 0 {
                w.failure = w.failure ?? .read(source: name, offset: offset, length: buffer.count,
                                               reason: r < 0 ? "poll: \(String(cString: strerror(pollErrno)))" : Self.lastError())
                c.broken = true
                c.wakeAll()
                break
            }
            // Hand polling over to a reader still waiting.
            if w.pending == 0, let next = c.waiters.values.first(where: { $0 !== w && $0.pending > 0 }) {
                pthread_cond_signal(next.cond)
            }
        }
        c.waiters[me] = nil
        if w.pending > 0 || c.broken {
            // Requests may still be in flight into this and other readers' buffers: the last
            // reader with requests on the broken connection closes the handle (ending them); a
            // reader whose requests are still in flight waits for that. Every reader looks at
            // `broken` within `slice`, so this wait is short.
            if c.broken {
                if !c.waiters.values.contains(where: { $0.pending > 0 }) {
                    if let h = c.handle { nbd_close(h); c.handle = nil }
                    c.owners.removeAll()
                    c.wakeAll()
                } else if w.pending > 0 {
                    while c.handle != nil { c.wait(w, seconds: Self.slice) }
                }
            }
            if w.pending > 0 { throw w.failure ?? abandoned(offset, buffer.count) }
        }
        if let failure = w.failure { throw failure }
    }

    private func abandoned(_ offset: UInt64, _ length: Int) -> SourceError {
        .read(source: name, offset: offset, length: length, reason: "the source was abandoned after an earlier read timed out or its connection failed")
    }

    static func lastError() -> String {
        guard let e = nbd_get_error() else { return "unknown libnbd error" }
        return String(cString: e)
    }

    static var now: Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Milliseconds to `deadline` for a poll, rounded up (0 once it has passed).
    static func milliseconds(until deadline: Double) -> Int32 {
        let left = deadline - now
        if left <= 0 { return 0 }
        return Int32(min((left * 1000).rounded(.up), Double(Int32.max)))
    }
}
