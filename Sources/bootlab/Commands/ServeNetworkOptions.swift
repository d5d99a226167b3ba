import ArgumentParser
import Foundation
import Frontends

/// `bootlab serve --tcp HOST:PORT` and its TLS (docs/frontends.md, "Remote serving with TLS"). A
/// network export without TLS is refused unless `--insecure` says so: a backup's disk over plain
/// TCP is readable (and, with --overlay, writable) by anyone on the path.
struct ServeNetworkOptions: ParsableArguments {
    @Option(help: "Listen on TCP instead of a Unix socket: HOST:PORT or [IPV6]:PORT (port 0 picks a free one, printed on stderr). Needs --tls-psk or --tls-certificates, or --insecure.")
    var tcp: String?
    @Option(help: "TLS with pre-shared keys: a psktool key file (USER:HEXKEY lines); clients need the same key (nbdkit --tls=require --tls-psk=FILE).")
    var tlsPsk: String?
    @Option(help: "TLS with X.509: a directory holding ca-cert.pem, server-cert.pem, server-key.pem (nbdkit --tls=require --tls-certificates=DIR).")
    var tlsCertificates: String?
    @Flag(help: "With --tls-certificates: require a client certificate signed by the CA (nbdkit --tls-verify-peer).")
    var tlsVerifyPeer = false
    @Flag(help: "Serve over TCP without TLS (plain text: anyone on the network path reads the disk). Only when asked explicitly.")
    var insecure = false

    /// The transport's security, checked: TLS key material present, TCP never plain unless asked.
    func security() throws -> TransportSecurity? {
        if tlsPsk != nil && tlsCertificates != nil { throw ValidationError("give --tls-psk or --tls-certificates, not both") }
        if tlsVerifyPeer && tlsCertificates == nil { throw ValidationError("--tls-verify-peer needs --tls-certificates") }
        let chosen: TransportSecurity?
        if let tlsPsk { chosen = .psk(file: tlsPsk) }
        else if let tlsCertificates { chosen = .certificates(directory: tlsCertificates, verifyPeer: tlsVerifyPeer) }
        else { chosen = nil }
        if let chosen {
            if insecure { throw ValidationError("--insecure contradicts --tls-psk/--tls-certificates") }
            try chosen.validate()
            return chosen
        }
        if tcp != nil {
            guard insecure else {
                throw FrontendError.tls("refusing to serve over TCP without TLS: pass --tls-psk FILE or --tls-certificates DIR, or --insecure to serve plain text on purpose")
            }
            return .insecure
        }
        if insecure { throw ValidationError("--insecure only applies to --tcp") }
        return nil
    }
}
