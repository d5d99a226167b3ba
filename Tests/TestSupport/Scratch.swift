import Foundation

/// A fresh directory for one test, removed with everything in it when the value goes away.
/// Every test target used to keep its own (Scratch, TempDir, SynthTempDir); this is the one.
public final class Scratch: @unchecked Sendable {
    // @unchecked: `path` is immutable; the directory itself is the test's to share.
    public let path: String

    /// `name` shows in the directory's name (bootlab-NAME-UUID), to tell leftovers apart.
    public init(_ name: String = "test") {
        path = NSTemporaryDirectory() + "bootlab-\(name)-" + UUID().uuidString
        // A test cannot run without its directory: failing here names the cause at once.
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// A path inside the directory (not created).
    public func file(_ name: String) -> String { path + "/" + name }

    /// A directory inside, created.
    public func dir(_ name: String) -> String {
        let p = file(name)
        try! FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }
}
