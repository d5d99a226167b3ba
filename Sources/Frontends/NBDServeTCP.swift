import BlockCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Serving over TCP, for a hypervisor on another host (docs/frontends.md, "Remote serving with
/// TLS"). The listening socket is made here, like the Unix one, and handed to nbdkit by socket
/// activation: a taken port or an unknown host fails before nbdkit starts, and port 0 picks a free
/// port that is printed before the exec.
public struct TCPEndpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// `HOST:PORT`, `[IPV6]:PORT`.
    public init(parsing text: String) throws {
        let host: Substring, port: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw FrontendError.badEndpoint(text, reason: "expected [ADDRESS]:PORT") }
            port = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw FrontendError.badEndpoint(text, reason: "expected HOST:PORT") }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard !host.isEmpty else { throw FrontendError.badEndpoint(text, reason: "empty host (use 0.0.0.0 or :: for every address)") }
        guard let p = UInt16(port) else { throw FrontendError.badEndpoint(text, reason: "port '\(port)' is not a number 0–65535") }
        self.host = String(host)
        self.port = p
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// A listening TCP socket on the first address `host` resolves to; returns it and the port
    /// actually bound (the chosen one when `port` is 0).
    public func listen() throws -> (fd: Int32, port: UInt16) {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let r = getaddrinfo(host, String(port), &hints, &list)
        guard r == 0, let first = list else {
            throw FrontendError.badEndpoint(description, reason: "cannot resolve host: \(String(cString: gai_strerror(r)))")
        }
        defer { freeaddrinfo(list) }
        var lastError: Int32 = 0
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            ai = a.pointee.ai_next
            let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), a.pointee.ai_protocol)
            guard fd >= 0 else { lastError = errno; continue }
            var one: Int32 = 1
            _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            guard bind(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0, Glibc.listen(fd, 128) == 0 else {
                lastError = errno
                close(fd)
                continue
            }
            var storage = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let bound: UInt16 = withUnsafeMutablePointer(to: &storage) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa -> UInt16 in
                    guard getsockname(fd, sa, &len) == 0 else { return port }
                    if sa.pointee.sa_family == sa_family_t(AF_INET6) {
                        return sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
                    }
                    return sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
                }
            }
            return (fd, bound)
        }
        throw IOError("bind/listen", path: description, errno: lastError)
    }
}

/// How a TCP export is protected: nbdkit's TLS (`--tls=require`), with a pre-shared key file
/// (psktool's `username:hexkey` lines) or an X.509 directory (ca-cert.pem, server-cert.pem,
/// server-key.pem), or explicitly nothing.
public enum TransportSecurity: Sendable, Equatable {
    case psk(file: String)
    case certificates(directory: String, verifyPeer: Bool)
    /// Plain text over the network; only when the user said `--insecure`.
    case insecure

    /// nbdkit's own arguments for it.
    public var nbdkitArguments: [String] {
        switch self {
        case .psk(let file): return ["--tls=require", "--tls-psk=" + absolutePath(file)]
        case .certificates(let dir, let verify):
            return ["--tls=require", "--tls-certificates=" + absolutePath(dir)] + (verify ? ["--tls-verify-peer"] : [])
        case .insecure: return []
        }
    }

    /// Checks the key material exists and is readable now, not inside nbdkit after the exec.
    public func validate() throws {
        let fm = FileManager.default
        switch self {
        case .psk(let file):
            guard fm.isReadableFile(atPath: file) else { throw FrontendError.tls("PSK file \(file) is missing or unreadable (make one with `psktool -u USER -p \(file)`)") }
        case .certificates(let dir, _):
            for f in ["server-cert.pem", "server-key.pem"] where !fm.isReadableFile(atPath: dir + "/" + f) {
                throw FrontendError.tls("certificate directory \(dir) has no readable \(f) (nbdkit needs ca-cert.pem, server-cert.pem, server-key.pem)")
            }
        case .insecure: break
        }
    }
}
