import Foundation
import Processes
import Testing

/// Why FUSE tests cannot run here, or nil.
func fuseUnavailable() -> String? {
    if getuid() != 0 { return "not root (/dev/fuse is root-only on this platform)" }
    if access("/dev/fuse", R_OK | W_OK) != 0 { return "/dev/fuse is not usable" }
    return toolsMissing(["fusermount3", "qemu-img", "qemu-io"])
}

/// Why NBD tests cannot run here, or nil.
func nbdUnavailable() -> String? {
    if !FileManager.default.fileExists(atPath: productsDirectory + "/libbootlab-nbdkit.so") {
        return nil // not a platform gap: the test fails below with a clear message
    }
    return toolsMissing(["nbdkit", "nbdinfo", "nbdcopy", "qemu-img", "qemu-io"])
}

/// The first of `tools` not on PATH, as a reason, or nil.
public func toolsMissing(_ tools: [String]) -> String? {
    for t in tools where Command.executablePath(of: t) == nil { return "\(t) is not installed (ci/setup installs it from ci/packages/*.txt)" }
    return nil
}

/// What this machine lacks for the FUSE tests (nil: nothing), checked once per test run.
public let fuseMissing: String? = fuseUnavailable()
/// What this machine lacks for the NBD tests (nil: nothing), checked once per test run.
public let nbdMissing: String? = nbdUnavailable()

extension Trait where Self == ConditionTrait {
    /// Runs the test only where FUSE works; otherwise Swift Testing reports it as skipped, with the
    /// missing capability as the reason (and ci/test fails on any skip when CI=true).
    public static var requiresFUSE: Self {
        .enabled(if: fuseMissing == nil, Comment(rawValue: "platform lacks a capability: \(fuseMissing ?? "")"))
    }
    /// Runs the test only when `reason` is nil (e.g. `toolsMissing([...])`); otherwise a reported
    /// skip that names what is missing.
    public static func requires(missing reason: String?) -> Self {
        .enabled(if: reason == nil, Comment(rawValue: "platform lacks a capability: \(reason ?? "")"))
    }
    /// Runs the test only where nbdkit and its tools are installed; otherwise a reported skip.
    public static var requiresNBD: Self {
        .enabled(if: nbdMissing == nil, Comment(rawValue: "platform lacks a capability: \(nbdMissing ?? "")"))
    }
}
