import BlockCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where a passphrase comes from. Never from argv: command lines are visible to every user of the
/// machine (`ps`, /proc/*/cmdline). Shared by `backup`, `expose`, `mount` and `serve`.
public enum PassphraseSource: Sendable, Hashable {
    /// The file's contents, one trailing newline (LF or CRLF) removed.
    case file(String)
    /// The value of an environment variable.
    case environment(String)
    /// Asked on the controlling terminal with echo off.
    case terminal(prompt: String)
    /// Given by a program (tests, library callers).
    case bytes([UInt8])

    public static let defaultEnvironmentVariable = "BOOTLAB_PASSPHRASE"

    /// The CLI's order: `--passphrase-file` if given, else `$BOOTLAB_PASSPHRASE` if set, else the terminal.
    public static func standard(file: String?, environmentVariable: String = defaultEnvironmentVariable,
                                prompt: String = "Passphrase: ") -> PassphraseSource {
        if let file { return .file(file) }
        if getenv(environmentVariable) != nil { return .environment(environmentVariable) }
        return .terminal(prompt: prompt)
    }

    /// Reads the passphrase. Empty passphrases are refused.
    public func resolve() throws -> [UInt8] {
        let bytes: [UInt8]
        switch self {
        case let .bytes(b):
            bytes = b
        case let .environment(name):
            guard let v = getenv(name) else { throw BackupImageError.passphraseRequired("environment variable \(name) is not set; the image") }
            bytes = Array(String(cString: v).utf8)
        case let .file(path):
            let f = try RawFile(path: path)
            guard f.size <= 64 << 10 else { throw BackupImageError.invalidArgument("passphrase file \(path) is larger than 64 KiB") }
            bytes = PassphraseSource.stripNewline(try f.read(at: 0, count: Int(f.size)))
        case let .terminal(prompt):
            bytes = try PassphraseSource.readFromTerminal(prompt: prompt)
        }
        guard !bytes.isEmpty else { throw BackupImageError.invalidArgument("the passphrase is empty") }
        return bytes
    }

    static func stripNewline(_ b: [UInt8]) -> [UInt8] {
        var b = b
        if b.last == 0x0A { b.removeLast(); if b.last == 0x0D { b.removeLast() } }
        return b
    }

    private static func readFromTerminal(prompt: String) throws -> [UInt8] {
        let fd = open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            throw BackupImageError.passphraseRequired("no terminal to ask on, no --passphrase-file and no \(defaultEnvironmentVariable); the image")
        }
        defer { close(fd) }
        var old = termios()
        let haveTermios = tcgetattr(fd, &old) == 0
        if haveTermios {
            var quiet = old
            quiet.c_lflag &= ~tcflag_t(ECHO)
            _ = tcsetattr(fd, TCSAFLUSH, &quiet)
        }
        defer { if haveTermios { var o = old; _ = tcsetattr(fd, TCSAFLUSH, &o) } }
        var p = Array(prompt.utf8)
        _ = write(fd, &p, p.count)
        var out: [UInt8] = []
        var c: UInt8 = 0
        while out.count < 4096 {
            let n = read(fd, &c, 1)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 || c == 0x0A { break }
            out.append(c)
        }
        var nl: [UInt8] = [0x0A]
        _ = write(fd, &nl, 1)
        if out.last == 0x0D { out.removeLast() }
        return out
    }
}

/// Resolves a passphrase at most once, on first need (opening a chain asks once, and a plain
/// image never asks).
final class PassphraseOnce: @unchecked Sendable {
    // @unchecked: state guarded by `lock`.
    private let source: PassphraseSource?
    private let lock = NSLockish()
    private var value: [UInt8]?
    private var masters: [[UInt8]: [UInt8]] = [:]

    init(_ source: PassphraseSource?) { self.source = source }

    func get(for what: String) throws -> [UInt8] {
        try lock.withLock {
            if let value { return value }
            guard let source else { throw BackupImageError.passphraseRequired(what) }
            let v = try source.resolve()
            value = v
            return v
        }
    }

    /// scrypt master key for (salt, parameters), memoized so a chain sharing a salt pays once.
    func master(salt: [UInt8], params: ScryptParameters, for what: String) throws -> [UInt8] {
        let key = salt + [params.log2N] + withUnsafeBytes(of: params.r.littleEndian, Array.init) + withUnsafeBytes(of: params.p.littleEndian, Array.init)
        if let m = lock.withLock({ masters[key] }) { return m }
        let m = try Crypto.scrypt(try get(for: what), salt: salt, params)
        lock.withLock { masters[key] = m }
        return m
    }
}
