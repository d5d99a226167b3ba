import BlockCore
import CNBD
#if canImport(Glibc)
import Glibc
#endif

/// A block source read over NBD through libnbd (the protocol, handshake and replies are
/// libnbd's; nothing here parses server bytes). Every wait is bounded: the connection and each
/// read use libnbd's asynchronous calls and `nbd_poll` with a deadline, so a server that hangs
/// gives `SourceError.readTimeout`/`.connect` instead of a hang.
///
/// Up to `maxConnections` connections, concurrent reads spread over them (each connection one
/// request at a time, under its lock); a server that serializes connections keeps one. A read that times out
/// closes its connection (its command is still in flight) and the source fails every later read:
/// a half-dead server is not trusted again.
public final class NBDSource: BlockSource, @unchecked Sendable {
    // @unchecked: each connection's handle is used only under its lock; `dead` is atomic-ish
    // behind its own lock; the rest is immutable.
    public let size: UInt64
    /// What error messages call this source (the spec, not the socket).
    public let name: String
    public let timeout: Double
    private let connections: [Connection]
    private let next = Locked<Int>(0)
    private let dead = Locked<Bool>(false)
    /// The server process behind the export, when we started it (kept alive with the source).
    private let server: SourceServer?
    /// Largest request sent at once (NBD servers refuse requests above 32 MiB).
    static let maxRequest = 8 << 20
    /// Connections opened when the server allows several (nbdcopy's default is 4 too).
    public static let maxConnections = 4

    final class Connection: @unchecked Sendable {
        // @unchecked: `handle` only under `lock`.
        var handle: OpaquePointer?
        let lock = NSLockish()
        init(_ h: OpaquePointer) { handle = h }
        deinit { if let handle { nbd_close(handle) } }
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
        } catch {
            nbd_close(h)
            throw error
        }
        return h
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        guard buffer.count > 0 else { return }
        let c = connections[next.withLock { n in defer { n = (n + 1) % connections.count }; return n }]
        try c.lock.withLock {
            var done = 0
            while done < buffer.count {
                let n = min(Self.maxRequest, buffer.count - done)
                try readLocked(c, at: offset + UInt64(done), into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)]))
                done += n
            }
        }
    }

    private func readLocked(_ c: Connection, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        guard !dead.current, let h = c.handle else {
            throw SourceError.read(source: name, offset: offset, length: buffer.count, reason: "the source was abandoned after an earlier read timed out")
        }
        let cookie = bl_nbd_aio_pread(h, buffer.baseAddress!, buffer.count, offset)
        guard cookie >= 0 else { throw SourceError.read(source: name, offset: offset, length: buffer.count, reason: Self.lastError()) }
        let deadline = Self.now + timeout
        while true {
            let r = nbd_aio_command_completed(h, UInt64(cookie))
            if r == 1 { return }
            if r < 0 { throw SourceError.read(source: name, offset: offset, length: buffer.count, reason: Self.lastError()) }
            let ms = Self.milliseconds(until: deadline)
            if ms == 0 {
                // The command is still in flight into `buffer`: close the connection before the
                // buffer goes away, and never use the source again.
                nbd_close(h)
                c.handle = nil
                dead.withLock { $0 = true }
                throw SourceError.readTimeout(source: name, offset: offset, length: buffer.count, seconds: timeout)
            }
            if nbd_poll(h, ms) < 0 { throw SourceError.read(source: name, offset: offset, length: buffer.count, reason: Self.lastError()) }
        }
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
