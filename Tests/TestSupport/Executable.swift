import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a test could not write its script.
public struct ExecutableWriteError: Error, CustomStringConvertible {
    public let description: String
}

/// Writes an executable script through a close-on-exec descriptor. Tests run in parallel: a child
/// another test starts while the script is being written would otherwise inherit the write
/// descriptor, and exec of the script then fails with "Text file busy" for as long as that child
/// lives (seen in EncryptedReconfigurationTests; `Data.write` + `chmod` has this race).
public func writeExecutable(_ path: String, _ text: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o755)
    guard fd >= 0 else { throw ExecutableWriteError(description: "open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    guard write(fd, bytes, bytes.count) == bytes.count else {
        throw ExecutableWriteError(description: "write \(path): \(String(cString: strerror(errno)))")
    }
    // open's mode is masked by the umask; the script must be executable whatever it is.
    guard fchmod(fd, 0o755) == 0 else { throw ExecutableWriteError(description: "chmod \(path): \(String(cString: strerror(errno)))") }
}
