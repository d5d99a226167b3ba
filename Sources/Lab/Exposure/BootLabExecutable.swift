import Foundation

/// Where the `bootlab` executable is, for steps that run it as a child process (a FUSE mount
/// must live in its own process: the lab itself reads through it).
public enum BootLabExecutable {
    public static func path() throws -> String {
        if let p = ProcessInfo.processInfo.environment["BOOTLAB_EXE"], FileManager.default.isExecutableFile(atPath: p) { return p }
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        if URL(fileURLWithPath: me).lastPathComponent == "bootlab" { return me }
        // Tests: the package's build directory beside the test bundle.
        var dir = URL(fileURLWithPath: me).deletingLastPathComponent()
        for _ in 0..<6 {
            let candidate = dir.appendingPathComponent("bootlab").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        throw LabError.missing("the bootlab executable", need: "build it, or set BOOTLAB_EXE")
    }
}
