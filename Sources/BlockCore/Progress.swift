#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A progress bar on stderr for long work (`-p`), drawn only when stderr is a terminal unless
/// forced. Updates are throttled to whole-percent changes, so calling it per block is cheap.
public final class ProgressBar: @unchecked Sendable {
    // @unchecked: mutable state guarded by `lock`.
    private let lock = NSLockish()
    private let total: UInt64
    private let label: String
    private let enabled: Bool
    private var done: UInt64 = 0
    private var lastPercent = -1

    public init(total: UInt64, label: String, enabled: Bool, force: Bool = false) {
        self.total = total
        self.label = label
        self.enabled = enabled && (force || isatty(2) != 0)
    }

    public func advance(by n: UInt64) {
        guard enabled else { return }
        lock.withLock {
            done += n
            draw()
        }
    }

    public func finish() {
        guard enabled else { return }
        lock.withLock {
            done = total
            draw()
            writeStandardError("\n")
        }
    }

    private func draw() {
        let pct = total == 0 ? 100 : Int(min(100, done * 100 / total))
        guard pct != lastPercent else { return }
        lastPercent = pct
        let width = 40
        let filled = pct * width / 100
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        writeStandardError("\r\(label) [\(bar)] \(pct)%")
    }
}

/// Writes to file descriptor 2 directly (the C `stderr` global is not concurrency-safe in Swift 6).
public func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    bytes.withUnsafeMutableBytes { buf in
        var done = 0
        while done < buf.count {
            let n = Glibc.write(2, buf.baseAddress! + done, buf.count - done)
            if n <= 0 { if n < 0 && errno == EINTR { continue }; return }
            done += n
        }
    }
}
