import BlockCore
import Foundation
import Processes
@testable import Reconfigure

/// Helpers shared by the reconfiguration tests: fixtures, composition, boots under QEMU TCG.
enum Fixture {
    static let testsDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    static let repoRoot = testsDir.deletingLastPathComponent().deletingLastPathComponent()
    static var drivers: DriverDatabase { get throws { try DriverDatabase.load(path: repoRoot.appendingPathComponent("Scenarios/drivers.json").path) } }

    static func tempDir(_ name: String) throws -> URL {
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-reconf-test-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: u)
        try FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
        return u
    }

    @discardableResult
    static func sh(_ argv: [String]) throws -> String {
        try Command(argv).run().stdoutText
    }

    /// The tiny Linux disk whose initramfs loads only `modules` (+ dependencies).
    static func tinyLinux(at path: String, modules: [String]) throws {
        try sh([testsDir.appendingPathComponent("Fixtures/make-tiny-linux.sh").path, path] + modules)
    }

    static func sha256(_ path: String) throws -> String {
        String(try sh(["sha256sum", path]).prefix(64))
    }

    /// base ▸ layer, materialized (what the lead's composed stack will serve).
    static func compose(base: String, layer: BlockSource, into out: String) throws {
        try sh(["cp", "--sparse=always", base, out])
        let f = try RawFile(path: out, writable: true)
        for e in try layer.allExtents() where e.kind == .data {
            let bytes = try layer.read(at: e.offset, count: Int(e.length))
            try f.write(at: e.offset, bytes)
        }
        try f.flush()
    }

    /// Boots `disk` behind the controller's emulation; returns the serial console text.
    static func boot(_ disk: String, controller: String) throws -> String {
        let c = try drivers.controller(for: controller).controller
        var args = ["timeout", "90", "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-display", "none",
                    "-serial", "stdio", "-monitor", "none", "-no-reboot", "-snapshot"]
        if controller == "ahci" { args += ["-machine", "q35"] }
        args += c.qemu.map { $0.replacingOccurrences(of: "{disk}", with: disk).replacingOccurrences(of: "{format}", with: "raw") }
        return try Command(args).run().stdoutText
    }
}
