import Testing
import Foundation
import TestSupport
import BackupImage
import BlockCore
import Exposure
#if canImport(Glibc)
import Glibc
#endif

/// The passphrase of an encrypted backup must reach every process that opens it — `bootlab serve`
/// and the nbdkit plugin it becomes, `bootlab mount`, `bootlab convert` of a plugin file — from
/// each documented source: `--passphrase-file`, `$BOOTLAB_PASSPHRASE`, and the terminal prompt
/// (driven through a pseudo-terminal by Tests/Tools/answer-prompt.py). Each case compares the
/// bytes served with the original disk, so a passphrase that is lost on the way (issue 9: the
/// plugin ignored the environment and failed every read) fails here.
@Suite(.serialized) struct PassphraseSourceTests {
    static let secret = "correct horse battery staple"

    enum Source: String, CaseIterable {
        case file, environment, prompt
    }

    /// An encrypted, compressed backup of a random disk and its plugin file.
    struct Fixture {
        let dir = Scratch()
        let disk: [UInt8]
        var diskPath: String { dir.file("disk.raw") }
        var plugin: String { dir.file("plug/vm.vhdx") }
        var backup: String { dir.file("plug/vm.bli") }
        var passphraseFile: String { dir.file("passphrase") }

        init() throws {
            // A disk with a partition table, so exposure keeps it as it is (a whole-disk backup).
            _ = try makeDisk(dir.path + "/disk.raw", seed: 91)
            let table = "label: dos\nlabel-id: 0x0c0ffee9\nstart=2048, size=8192, type=83\n"
            try Data(table.utf8).write(to: URL(fileURLWithPath: dir.path + "/table"))
            let sf = try TestSupport.run("/bin/sh", ["-c", "sfdisk -q \"$0\" < \"$1\"", dir.path + "/disk.raw", dir.path + "/table"])
            guard sf.status == 0 else { throw FixtureError(message: "sfdisk: \(sf.stderr)") }
            let raw = try RawFile(path: dir.path + "/disk.raw")
            disk = try raw.read(at: 0, count: Int(raw.size))
            _ = dir.dir("plug")
            try Data((PassphraseSourceTests.secret + "\n").utf8).write(to: URL(fileURLWithPath: dir.file("passphrase")))
            var o = BackupCreateOptions()
            o.encrypt = true
            o.passphrase = .bytes(Array(PassphraseSourceTests.secret.utf8))
            o.scrypt = .testing
            o.compression = .zstd
            o.imageID = BackupCreateOptions.imageID(seed: "passphrase-sources")
            _ = try BackupImageWriter.create(sourcePath: dir.file("disk.raw"), outputPath: dir.file("plug/vm.bli"), options: o)
            var e = PluginFile.ExposeOptions()
            e.passphrase = .bytes(Array(PassphraseSourceTests.secret.utf8))
            _ = try PluginFile.expose(backupPath: dir.file("plug/vm.bli"), pluginPath: dir.file("plug/vm.vhdx"), options: e)
        }

        /// The environment of a child: ours without any passphrase, plus the secret when the
        /// source is the environment.
        func environment(_ source: Source) -> [String: String] {
            var env = ProcessInfo.processInfo.environment
            env[PassphraseSource.defaultEnvironmentVariable] = nil
            if source == .environment { env[PassphraseSource.defaultEnvironmentVariable] = PassphraseSourceTests.secret }
            return env
        }

        /// The executable and arguments that run `bootlab ARGS` with the passphrase from `source`.
        func command(_ args: [String], _ source: Source) -> (executable: String, arguments: [String]) {
            switch source {
            case .file: return (bootlabPath, args + ["--passphrase-file", passphraseFile])
            case .environment: return (bootlabPath, args)
            case .prompt: return (answerPrompt, [passphraseFile, bootlabPath] + args)
            }
        }

        func start(_ args: [String], _ source: Source, log: String) throws -> Server {
            let (exe, argv) = command(args, source)
            return try Server(argv, log: dir.file(log), executable: exe, environment: environment(source))
        }

        func run(_ args: [String], _ source: Source) throws -> RunResult {
            let (exe, argv) = command(args, source)
            return try TestSupport.run(exe, argv, timeout: 120, environment: environment(source))
        }
    }

    struct FixtureError: Error { var message: String }

    static let answerPrompt = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Tools/answer-prompt.py").path

    @Test(arguments: Source.allCases)
    func serveRawReadsTheBackupWithThePassphraseFrom(_ source: Source) throws {
        let f = try Fixture()
        let socket = f.dir.file("s.sock")
        let server = try f.start(["serve", f.plugin, "--raw", "--socket", socket], source, log: "serve.log")
        defer { server.stop() }
        #expect(waitForNBD(socket), "\(server.log)")
        let copy = f.dir.file("copy.raw")
        let c = try run("nbdcopy", [uri(socket), copy])
        #expect(c.status == 0, "nbdcopy: \(c.stderr)\nserver: \(server.log)")
        #expect(try sha256(ofFile: copy) == SHA256.hash(f.disk).hex, "served bytes differ; server: \(server.log)")
        #expect(!server.log.contains("error"), "\(server.log)")
        // The secret is on no command line: not bootlab's, not nbdkit's (the same process after exec).
        let cmdline = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(server.pid)/cmdline"))
        #expect(!String(decoding: cmdline, as: UTF8.self).contains(Self.secret))
        if source != .prompt {
            #expect(String(decoding: cmdline, as: UTF8.self).contains("nbdkit"), "serve did not become nbdkit")
        }
    }

    @Test func serveVHDXWithThePassphraseInTheEnvironment() throws {
        let f = try Fixture()
        let socket = f.dir.file("s.sock")
        let server = try f.start(["serve", f.plugin, "--socket", socket], .environment, log: "serve.log")
        defer { server.stop() }
        #expect(waitForNBD(socket), "\(server.log)")
        let spec = "json:{\"driver\":\"vhdx\",\"file\":{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"\(socket)\"}}}"
        let cmp = try run("qemu-img", ["compare", "-f", "raw", f.diskPath, spec])
        #expect(cmp.status == 0 && cmp.stdout.contains("identical"), "\(cmp.stdout)\(cmp.stderr)\nserver: \(server.log)")
    }

    @Test(arguments: Source.allCases)
    func mountReadsTheBackupWithThePassphraseFrom(_ source: Source) throws {
        let f = try Fixture()
        let mnt = f.dir.dir("mnt")
        let server = try f.start(["mount", f.dir.file("plug"), mnt], source, log: "mount.log")
        defer { server.stop(); unmount(mnt) }
        #expect(waitFor(30) { isMounted(mnt) }, "\(server.log)")
        let cmp = try run("qemu-img", ["compare", "-f", "raw", "-F", "vhdx", f.diskPath, mnt + "/vm.vhdx"])
        #expect(cmp.status == 0 && cmp.stdout.contains("identical"), "\(cmp.stdout)\(cmp.stderr)\nmount: \(server.log)")
        #expect(server.stop(SIGTERM) == 0, "\(server.log)")
    }

    @Test(arguments: Source.allCases)
    func convertOfAPluginReadsTheBackupWithThePassphraseFrom(_ source: Source) throws {
        let f = try Fixture()
        let out = f.dir.file("out.raw")
        let r = try f.run(["convert", "-O", "raw", f.plugin, out], source)
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(try sha256(ofFile: out) == SHA256.hash(f.disk).hex)
        // The replacement file too (the plugin materialized as VHDX) holds the disk.
        let vhdx = f.dir.file("out.vhdx")
        let v = try f.run(["convert", "-O", "vhdx", f.plugin, vhdx], source)
        #expect(v.status == 0, "\(v.stdout)\(v.stderr)")
        let cmp = try run("qemu-img", ["compare", "-f", "raw", "-F", "vhdx", f.diskPath, vhdx])
        #expect(cmp.status == 0, "\(cmp.stdout)\(cmp.stderr)")
    }

    /// The plugin reads `$BOOTLAB_PASSPHRASE` itself: nbdkit run directly (as a user's own
    /// nbdkit command line or a service would), without `bootlab serve` in front.
    @Test func theNBDKitPluginTakesThePassphraseFromTheEnvironment() throws {
        let f = try Fixture()
        let socket = f.dir.file("s.sock")
        let server = try Server(["nbdkit", "--foreground", "--readonly", "--unix", socket, productsDirectory + "/libbootlab-nbdkit.so",
                                 "file=" + f.plugin, "raw=true"],
                                log: f.dir.file("nbdkit.log"), executable: "/usr/bin/env", environment: f.environment(.environment))
        // SIGKILL: nbdkit started by Foundation's Process keeps SIGTERM blocked (`bootlab serve`
        // resets that before it execs nbdkit); a read-only export has nothing to flush.
        defer { server.stop(SIGKILL) }
        #expect(waitForNBD(socket), "\(server.log)")
        let copy = f.dir.file("copy.raw")
        let c = try run("nbdcopy", [uri(socket), copy])
        #expect(c.status == 0, "nbdcopy: \(c.stderr)\nnbdkit: \(server.log)")
        #expect(try sha256(ofFile: copy) == SHA256.hash(f.disk).hex, "nbdkit: \(server.log)")
    }

    /// A wrong passphrase in the environment is named as such by the plugin, on the first read.
    @Test func aWrongPassphraseInTheEnvironmentIsReportedAsWrong() throws {
        let f = try Fixture()
        let socket = f.dir.file("s.sock")
        var env = f.environment(.file)
        env[PassphraseSource.defaultEnvironmentVariable] = "not the passphrase"
        let r = try run(bootlabPath, ["convert", "-O", "raw", f.plugin, f.dir.file("out.raw")], environment: env)
        #expect(r.status != 0)
        #expect(r.stderr.contains("wrong passphrase"), "\(r.stderr)")
        let server = try Server(["serve", f.plugin, "--raw", "--socket", socket], log: f.dir.file("serve.log"), environment: env)
        defer { server.stop() }
        #expect(waitForNBD(socket), "\(server.log)")
        let c = try run("nbdcopy", [uri(socket), f.dir.file("copy.raw")])
        #expect(c.status != 0, "a wrong passphrase served bytes")
        #expect(server.log.contains("wrong passphrase"), "\(server.log)")
    }
}
