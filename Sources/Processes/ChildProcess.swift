import CProcessShim
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A started child that is kept: a server (`bootlab mount`/`serve`, nbdkit), QEMU, a front-end.
/// Its exit is watched through a pidfd, so `wait` blocks in poll(2) rather than a sleep loop, and
/// it is reaped exactly once: `kill` is only ever sent to a pid that is still ours (not yet
/// reaped, so not reusable by another process).
public final class ChildProcess: Sendable {
    public let pid: pid_t
    public let argv: [String]
    /// `ProcessOwner.current` when it was started: who may stop it (a lab cell past its hard
    /// timeout stops its own children, not its neighbours').
    public let owner: String?
    private let pidfd: Int32
    /// Set when the child has been reaped; guards every signal and the reap itself.
    private let ended = Mutex<Termination?>(nil)

    init(pid: pid_t, pidfd: Int32, argv: [String]) {
        self.pid = pid
        self.pidfd = pidfd
        self.argv = argv
        self.owner = ProcessOwner.current
        LiveChildren.shared.add(self)
    }

    deinit { close(pidfd) }

    /// How it ended; nil while it runs. Never blocks.
    public var termination: Termination? { wait(timeout: 0) }

    public var isRunning: Bool { termination == nil }

    /// Waits up to `timeout` seconds (nil: for ever) for the exit; nil if it still runs then.
    @discardableResult
    public func wait(timeout: Double? = nil) -> Termination? {
        if let t = ended.withLock({ $0 }) { return t }
        guard waitReadable(timeout: timeout) else { return nil }
        return reap()
    }

    /// Sends `signal` if the child has not been reaped yet.
    public func signal(_ signal: Int32) {
        ended.withLock { t in
            if t == nil { _ = kill(pid, signal) }
        }
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace` seconds; returns how it ended.
    @discardableResult
    public func terminate(grace: Double = 5) -> Termination {
        if let t = termination { return t }
        signal(SIGTERM)
        if let t = wait(timeout: grace) { return t }
        signal(SIGKILL)
        return wait()!
    }

    /// poll(2) on the pidfd: readable once the child has exited.
    private func waitReadable(timeout: Double?) -> Bool {
        var fds = [pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)]
        let deadline = timeout.map { Clock.now + $0 }
        while true {
            let ms = deadline.map { Clock.milliseconds(until: $0) } ?? -1
            let r = poll(&fds, 1, ms)
            if r > 0 { return true }
            if r == 0 { return false }
            if errno != EINTR { return false }
        }
    }

    /// waitpid on the exited child, once; later callers get the stored result.
    private func reap() -> Termination? {
        ended.withLock { t in
            if let t { return t }
            var status: Int32 = 0
            var r: pid_t
            repeat { r = waitpid(pid, &status, WNOHANG) } while r < 0 && errno == EINTR
            // 0: the pidfd said it exited but the zombie is not visible yet; cannot happen on
            // Linux (the pidfd turns readable at the zombie stage). Treat as still running.
            guard r == pid else { return nil }
            t = Termination(waitStatus: status)
            LiveChildren.shared.remove(pid)
            return t
        }
    }
}

/// Monotonic seconds (deadlines must not move with the wall clock).
enum Clock {
    static var now: Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Milliseconds from now to `deadline` for poll(2): 0 if past, rounded up so a wait is never
    /// cut short into a spin.
    static func milliseconds(until deadline: Double) -> Int32 {
        let left = deadline - now
        if left <= 0 { return 0 }
        return Int32(min((left * 1000).rounded(.up), Double(Int32.max)))
    }
}

/// The children this process started and has not reaped yet — the one process-wide table a
/// program needs to stop everything it started when it is interrupted (`bootlab lab run` on
/// SIGINT/SIGTERM): QEMU, front-ends, mounters. Children that were reaped are gone from it.
public final class LiveChildren: Sendable {
    public static let shared = LiveChildren()
    private let children = Mutex<[pid_t: ChildProcess]>([:])

    func add(_ c: ChildProcess) { children.withLock { $0[c.pid] = c } }
    func remove(_ pid: pid_t) { _ = children.withLock { $0.removeValue(forKey: pid) } }

    /// Children still running, by pid.
    public var running: [ChildProcess] { children.withLock { Array($0.values) }.filter(\.isRunning) }

    /// SIGTERM to every live child, SIGKILL to those still running after `grace` seconds; waits
    /// until all have been reaped.
    public func terminateAll(grace: Double = 5) {
        terminate(running, grace: grace)
    }

    /// The same for the children started under one `ProcessOwner` (a timed-out lab cell); returns
    /// how many there were.
    @discardableResult
    public func terminateAll(owner: String, grace: Double = 5) -> Int {
        let mine = running.filter { $0.owner == owner }
        terminate(mine, grace: grace)
        return mine.count
    }

    private func terminate(_ all: [ChildProcess], grace: Double) {
        for c in all { c.signal(SIGTERM) }
        let deadline = Clock.now + grace
        for c in all { _ = c.wait(timeout: max(0, deadline - Clock.now)) }
        for c in all where c.isRunning { c.signal(SIGKILL) }
        for c in all { _ = c.wait() }
    }
}

/// Who is starting children on this thread (or task): `ProcessOwner.$current.withValue("cell") { … }`
/// tags every `ChildProcess` started inside, so `LiveChildren.terminateAll(owner:)` can stop one
/// owner's children and leave the others running. Nil outside any owner.
public enum ProcessOwner {
    @TaskLocal public static var current: String?
}
