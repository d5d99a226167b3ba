import BackupImage
import BlockCore
import Exposure
import Foundation
import Processes
import TestSupport
import PluginReconfigure
import Reconfigure
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Reconfiguration of encrypted backups (issue 9): the passphrase must reach the parent and its
/// `bootlab serve --raw` child from each source; a wrong one fails fast, by name; a child that
/// cannot serve is reported with what it said, never as "no operating system found" (nor is a
/// disk the engine cannot read).
///
/// The machine is the tiny Linux of the reconfiguration tests (make-tiny-linux.sh): an initramfs
/// that loads only AHCI, so it cannot find its root on IDE until reconfigured.
@Suite(.serialized) struct EncryptedReconfigurationTests {
    static let secret = "issue nine passphrase"

    @Test func theEnvironmentPassphraseReachesTheChildAndTheDiskBootsOnIDE() throws {
        let f = try Fixture.make("env")
        let r = try run(bootlab, ["reconfigure", f.plugin, "--target", "hyperv-gen1", "--json", "--drivers", driversPath],
                        environment: environment(passphrase: Self.secret), timeout: 600)
        #expect(r.status == 0, "\(r.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])["report"] as? [String: Any]
        #expect((report?["addedModules"] as? [String]) == ["kernel/drivers/ata/ata_piix.ko"], "\(r.stdout)")
        #expect(try sha256(f.backup) == f.backupDigest, "the backup must never be written")

        // The reconfigured disk, read through the plugin with the passphrase from the environment, boots on IDE.
        let disk = f.dir.appendingPathComponent("reconfigured.raw").path
        let c = try run(bootlab, ["convert", "-O", "raw", f.plugin, disk], environment: environment(passphrase: Self.secret))
        #expect(c.status == 0, "\(c.stderr)")
        let console = try boot(disk)
        #expect(console.contains("BOOTLAB-MARKER tiny-linux booted"), "IDE boot:\n\(console)")
    }

    @Test func theFilePassphraseReachesTheChild() throws {
        let f = try Fixture.make("file")
        let r = try run(bootlab, ["reconfigure", f.plugin, "--target", "kvm-virtio", "--json", "--drivers", driversPath,
                                  "--passphrase-file", f.passphraseFile],
                        environment: environment(passphrase: nil), timeout: 600)
        #expect(r.status == 0, "\(r.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])["report"] as? [String: Any]
        #expect((report?["addedModules"] as? [String])?.contains("kernel/drivers/block/virtio_blk.ko") == true, "\(r.stdout)")
    }

    @Test func thePromptedPassphraseReachesTheChild() throws {
        let f = try Fixture.make("prompt")
        let r = try run(answerPrompt, [f.passphraseFile, bootlab, "reconfigure", f.plugin, "--target", "vmware-pvscsi",
                                       "--drivers", driversPath],
                        environment: environment(passphrase: nil), timeout: 600)
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("Passphrase:"), "no prompt was shown: \(r.stdout)")
        #expect(r.stdout.contains("vmw_pvscsi"), "\(r.stdout)")
    }

    @Test func aWrongPassphraseFailsFastByName() throws {
        let f = try Fixture.make("wrong")
        let wrongFile = f.dir.appendingPathComponent("wrong").path
        try Data("not it\n".utf8).write(to: URL(fileURLWithPath: wrongFile))
        for (args, env) in [([String](), environment(passphrase: "not it")),
                            (["--passphrase-file", wrongFile], environment(passphrase: nil))] {
            let start = Date()
            let r = try run(bootlab, ["reconfigure", f.plugin, "--target", "hyperv-gen1", "--drivers", driversPath] + args,
                            environment: env, timeout: 120)
            let seconds = Date().timeIntervalSince(start)
            #expect(r.status == 1)
            #expect(r.stderr.contains("wrong passphrase"), "\(r.stderr)")
            #expect(!r.stderr.contains("no operating system"), "\(r.stderr)")
            // An appliance launch takes 10–17 s here; the check happens before any.
            #expect(seconds < 5, "took \(seconds) s")
        }
        #expect(!FileManager.default.fileExists(atPath: f.plugin + ".reconf"), "a failed run left a layer")
    }

    /// The child gets a wrong passphrase (a wrapper overrides the one the parent hands over): it
    /// listens but cannot read. The error names the unreadable disk, the running child and its
    /// log's "wrong passphrase" — before any appliance starts.
    @Test func aChildThatCannotReadIsReportedWithItsLog() throws {
        let f = try Fixture.make("child")
        let wrapper = f.dir.appendingPathComponent("bootlab-wrong-env").path
        try writeExecutable(wrapper, "#!/bin/sh\nBOOTLAB_PASSPHRASE='not it' exec '\(bootlab)' \"$@\"\n")
        let error = try reconfigure(f, executable: wrapper)
        guard case .unreadable = error else { Issue.record("expected .unreadable, got \(error)"); return }
        let text = "\(error)"
        #expect(text.contains("cannot be read"), "\(text)")
        #expect(text.contains("qemu-io"), "\(text)")
        #expect(text.contains("is running"), "\(text)")
        #expect(text.contains("wrong passphrase"), "the child's log is missing: \(text)")
        #expect(!text.contains("no operating system"))
    }

    /// A child that exits: its exit status and the last lines it printed.
    @Test func aChildThatExitsIsReportedWithItsStatusAndLog() throws {
        let f = try Fixture.make("exit")
        let wrapper = f.dir.appendingPathComponent("bootlab-exits").path
        try writeExecutable(wrapper, "#!/bin/sh\necho 'first line'\necho 'nbdkit: cannot load the plugin' >&2\nexit 3\n")
        let error = try reconfigure(f, executable: wrapper)
        guard case .server = error else { Issue.record("expected .server, got \(error)"); return }
        let text = "\(error)"
        #expect(text.contains("exited with status 3"), "\(text)")
        #expect(text.contains("first line | nbdkit: cannot load the plugin"), "\(text)")
    }

    /// The engine on a disk whose every read fails (nbdkit's error filter): named an unreadable
    /// disk with libguestfs's error, not a disk without an operating system.
    @Test func theEngineNamesAnUnreadableDisk() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-unreadable-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let socket = dir.appendingPathComponent("s.sock").path
        let nbdkit = try Command(["nbdkit", "--foreground", "--unix", socket, "--filter=error", "memory", "32M",
                                  "error=EIO", "error-pread-rate=100%"], stdout: .null, stderr: .null).spawn()
        defer { nbdkit.signal(SIGKILL); nbdkit.wait() }
        for _ in 0..<200 where !FileManager.default.fileExists(atPath: socket) { usleep(25_000) }
        let r = try run(bootlab, ["reconfigure", "--disk", "nbd+unix:///?socket=\(socket)", "--layer",
                                  dir.appendingPathComponent("layer.raw").path, "--target", "hyperv-gen1", "--drivers", driversPath],
                        environment: environment(passphrase: nil), timeout: 300)
        #expect(r.status == 1)
        #expect(r.stderr.contains("unreadable disk: libguestfs cannot read /dev/sda"), "\(r.stderr)")
        #expect(r.stderr.contains("Input/output error"), "\(r.stderr)")
        #expect(!r.stderr.contains("no operating system"), "\(r.stderr)")
    }

    // MARK: helpers

    /// Runs the library's reconfiguration with `executable` as the child; returns its failure.
    private func reconfigure(_ f: Fixture, executable: String) throws -> PluginReconfiguration.Failure {
        var access = PluginFile.OpenOptions()
        access.passphrase = .bytes(Array(Self.secret.utf8))
        let start = Date()
        do {
            _ = try PluginReconfiguration.run(pluginPath: f.plugin, options: .init(
                target: "hyperv-gen1", drivers: try DriverDatabase.load(path: driversPath), bootlabExecutable: executable, access: access))
        } catch let e as PluginReconfiguration.Failure {
            #expect(Date().timeIntervalSince(start) < 10, "the child's failure was found only after an appliance launch")
            return e
        }
        throw FixtureError("reconfiguration succeeded with a failing child")
    }

    struct FixtureError: Error, CustomStringConvertible {
        var description: String
        init(_ s: String) { description = s }
    }

    /// A tiny Linux disk, its encrypted volume-only backup and the plugin file.
    struct Fixture {
        var dir: URL
        var plugin: String
        var backup: String
        var backupDigest: String
        var passphraseFile: String

        static func make(_ name: String) throws -> Fixture {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-encrypted-reconf-\(name)-\(getpid())")
            try? FileManager.default.removeItem(at: dir)
            try FileManager.default.createDirectory(at: dir.appendingPathComponent("plug"), withIntermediateDirectories: true)
            let disk = dir.appendingPathComponent("disk.raw").path
            let tiny = try run(repoRoot.appendingPathComponent("Tests/ReconfigureTests/Fixtures/make-tiny-linux.sh").path,
                               [disk, "ahci", "sd_mod"], environment: environment(passphrase: nil), timeout: 300)
            guard tiny.status == 0 else { throw FixtureError("make-tiny-linux.sh: \(tiny.stderr)") }
            let passphraseFile = dir.appendingPathComponent("passphrase").path
            try Data((secret + "\n").utf8).write(to: URL(fileURLWithPath: passphraseFile))
            let backup = dir.appendingPathComponent("plug/vm.bli").path
            var o = BackupCreateOptions()
            o.partition = 1
            o.compression = .zstd
            o.encrypt = true
            o.passphrase = .file(passphraseFile)
            o.scrypt = .testing
            o.imageID = BackupCreateOptions.imageID(seed: "encrypted-reconfiguration/\(name)")
            _ = try BackupImageWriter.create(sourcePath: disk, outputPath: backup, options: o)
            let plugin = dir.appendingPathComponent("plug/vm.vhdx").path
            var e = PluginFile.ExposeOptions()
            e.passphrase = .file(passphraseFile)
            _ = try PluginFile.expose(backupPath: backup, pluginPath: plugin, options: e)
            return Fixture(dir: dir, plugin: plugin, backup: backup, backupDigest: try sha256(backup), passphraseFile: passphraseFile)
        }
    }
}

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let driversPath = repoRoot.appendingPathComponent("Scenarios/drivers.json").path
let answerPrompt = repoRoot.appendingPathComponent("Tests/Tools/answer-prompt.py").path

/// `bootlab` in the build directory this test binary runs from.
let bootlab = bootlabPath

/// Our environment without any passphrase, plus `passphrase` as `$BOOTLAB_PASSPHRASE` if given.
func environment(passphrase: String?) -> [String: String] {
    var env = ProcessInfo.processInfo.environment
    env[PassphraseSource.defaultEnvironmentVariable] = passphrase
    return env
}

/// TestSupport's runner with this suite's habits: the whole environment always given, 120 s.
func run(_ tool: String, _ args: [String], environment: [String: String], timeout: Double = 120) throws -> RunResult {
    try TestSupport.run(tool, args, timeout: timeout, environment: environment)
}

func sha256(_ path: String) throws -> String { try SHA256.hash(RawFile(path: path)).hex }

/// Boots a raw disk on IDE under QEMU (TCG) and returns the serial console.
func boot(_ disk: String) throws -> String {
    let r = try run("/usr/bin/env", ["timeout", "120", "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-display", "none",
                                     "-serial", "stdio", "-monitor", "none", "-no-reboot", "-snapshot",
                                     "-drive", "file=\(disk),format=raw,if=ide"],
                    environment: environment(passphrase: nil), timeout: 150)
    return r.stdout
}
