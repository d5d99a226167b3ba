import BlockCore
import Foundation
import Frontends
import Testing
import TestSupport

/// Data files are found by where the binary is (docs/installing.md), never by the working
/// directory: the resolver's order on fake trees, and the built binary copied into a fake install
/// tree (DESTDIR/usr/bin, DESTDIR/usr/share/bootlab, nbdkit's plugin directory under DESTDIR/usr/lib)
/// and run from /tmp.
@Suite struct InstallLayoutTests {
    /// A fake checkout (`Package.swift`, `Scenarios/targets`, `Golden`) or data root under `dir`.
    static func makeDataRoot(_ dir: String, checkout: Bool = false) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/Scenarios/targets", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: dir + "/Golden", withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: URL(fileURLWithPath: dir + "/Scenarios/drivers.json"))
        if checkout { try Data("// swift-tools-version:6.0\n".utf8).write(to: URL(fileURLWithPath: dir + "/Package.swift")) }
    }

    @Test func resolverOrderFlagEnvironmentDataDirCheckoutPrefix() throws {
        let s = Scratch("datafiles")
        let repo = s.dir("repo"), dest = s.dir("dest"), data = s.dir("data")
        try Self.makeDataRoot(repo, checkout: true)
        try Self.makeDataRoot(dest + "/usr/share/bootlab")
        try Self.makeDataRoot(data)
        let built = repo + "/.build/x86_64-unknown-linux-gnu/debug/bootlab"
        let installed = dest + "/usr/bin/bootlab"

        // A build-tree executable uses its checkout; an installed one its prefix.
        let fromBuild = try DataFiles.locate(.scenarios, environment: [:], executable: built)
        #expect(fromBuild.path == repo + "/Scenarios" && fromBuild.origin == .checkout)
        let fromPrefix = try DataFiles.locate(.drivers, environment: [:], executable: installed)
        #expect(fromPrefix.path == dest + "/usr/share/bootlab/Scenarios/drivers.json")
        #expect(fromPrefix.origin == .installPrefix)
        // A .build directory without Package.swift above it is no checkout.
        #expect(DataFiles.checkout(forExecutable: s.path + "/elsewhere/.build/debug/bootlab") == nil)

        // BOOTLAB_DATA_DIR comes before the checkout; the item's variable before both; the flag first.
        let viaDataDir = try DataFiles.locate(.golden, environment: ["BOOTLAB_DATA_DIR": data], executable: built)
        #expect(viaDataDir.path == data + "/Golden" && viaDataDir.origin == .dataDirectory)
        let viaItem = try DataFiles.locate(.golden, environment: ["BOOTLAB_DATA_DIR": data, "BOOTLAB_GOLDEN": repo + "/Golden"], executable: built)
        #expect(viaItem.path == repo + "/Golden" && viaItem.origin == .environment)
        let viaFlag = try DataFiles.locate(.golden, explicit: dest + "/usr/share/bootlab/Golden",
                                           environment: ["BOOTLAB_GOLDEN": repo + "/Golden"], executable: built)
        #expect(viaFlag.path == dest + "/usr/share/bootlab/Golden" && viaFlag.origin == .flag)

        // A named file that is missing is an error naming it, not a fallthrough to the next place.
        #expect(throws: DataFileError.notFound(item: "drivers", searched: [s.path + "/nope.json (from $BOOTLAB_DRIVERS)"], hint: "--drivers FILE")) {
            try DataFiles.locate(.drivers, environment: ["BOOTLAB_DRIVERS": s.path + "/nope.json"], executable: built)
        }
        // Nothing anywhere: every place searched, in order.
        let bare = s.path + "/bare/usr/bin/bootlab"
        #expect(throws: DataFileError.notFound(item: "scenarios", searched: [
            "$BOOTLAB_SCENARIOS (not set)", "$BOOTLAB_DATA_DIR (not set)",
            s.path + "/bare/usr/share/bootlab/Scenarios (the install prefix of this bootlab)",
        ], hint: "--scenarios DIR")) {
            try DataFiles.locate(.scenarios, environment: [:], executable: bare)
        }
    }

    /// The environment of a user who never heard of BootLab's variables (the shared kernel cache stays).
    static var userEnvironment: [String: String] {
        ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("BOOTLAB_") || $0.key == "BOOTLAB_CACHE" }
    }

    /// Runs `exe ARGS` with /tmp as its working directory.
    static func runFromTmp(_ exe: String, _ args: [String]) throws -> RunResult {
        try run("/usr/bin/env", ["-C", "/tmp", exe] + args, environment: userEnvironment)
    }

    @Test func theBuiltBinaryInAFakeInstallTreeUsesItsPrefixFromTmp() throws {
        let fm = FileManager.default
        guard let repo = DataFiles.checkout(forExecutable: bootlabPath) else {
            Issue.record("the test's bootlab (\(bootlabPath)) is not in a checkout's .build"); return
        }
        let s = Scratch("install-tree")
        let dest = s.path + "/DESTDIR"
        let share = dest + "/usr/share/bootlab"
        try fm.createDirectory(atPath: dest + "/usr/bin", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: share, withIntermediateDirectories: true)
        let exe = dest + "/usr/bin/bootlab"
        try fm.copyItem(atPath: bootlabPath, toPath: exe)
        try fm.copyItem(atPath: repo.path + "/Scenarios", toPath: share + "/Scenarios")
        try fm.copyItem(atPath: repo.path + "/Golden", toPath: share + "/Golden")
        // A scenario only the install tree has: seeing it proves the data came from there.
        let yaml = try String(contentsOfFile: share + "/Scenarios/mbrless-ext4.yaml", encoding: .utf8)
            .replacingOccurrences(of: "name: mbrless-ext4", with: "name: installed-only")
        try yaml.write(toFile: share + "/Scenarios/installed-only.yaml", atomically: true, encoding: .utf8)

        let list = try Self.runFromTmp(exe, ["lab", "list"])
        #expect(list.status == 0, "\(list.stderr)")
        #expect(list.stdout.contains("installed-only"), "lab list from /tmp did not read the install tree: \(list.stdout)")
        #expect(list.stdout.contains("mbrless-ext4"))

        // Its goldens are the installation's: --update-golden refuses to write there, before any cell runs.
        let update = try Self.runFromTmp(exe, ["lab", "run", "mbrless-ext4", "--target", "kvm-virtio", "--update-golden"])
        #expect(update.status == 1)
        #expect(update.stderr.contains("golden directory \(share)/Golden: belongs to the installed package"), "\(update.stderr)")

        // The nbdkit plugin, installed where nbdkit looks for plugins by name, under the prefix.
        let pluginDir = dest + "/usr/lib/x86_64-linux-gnu/nbdkit/plugins"
        let raw = s.file("disk.raw")
        try Data(count: 1 << 20).write(to: URL(fileURLWithPath: raw))
        let before = try Self.runFromTmp(exe, ["serve", raw, "--socket", s.file("s.sock"), "--print-command"])
        // Without it: nbdkit's own plugindir is searched last (the real one has no bootlab plugin here
        // unless the package is installed), and every place is named.
        if !fm.fileExists(atPath: "/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-bootlab-plugin.so") {
            #expect(before.status == 1)
            #expect(before.stderr.contains("\(dest)/usr/bin/libbootlab-nbdkit.so (beside the executable)"), "\(before.stderr)")
            #expect(before.stderr.contains("\(pluginDir)/nbdkit-bootlab-plugin.so (the install prefix)"), "\(before.stderr)")
            #expect(before.stderr.contains("nbdkit's plugindir"), "\(before.stderr)")
        }
        try fm.createDirectory(atPath: pluginDir, withIntermediateDirectories: true)
        try fm.copyItem(atPath: productsDirectory + "/libbootlab-nbdkit.so", toPath: pluginDir + "/nbdkit-bootlab-plugin.so")
        let serve = try Self.runFromTmp(exe, ["serve", raw, "--socket", s.file("s.sock"), "--print-command"])
        #expect(serve.status == 0, "\(serve.stderr)")
        #expect(serve.stdout.contains(" \(pluginDir)/nbdkit-bootlab-plugin.so file=\(raw)"), "\(serve.stdout)")

        // Without its data the installed binary fails, naming every place it looked — never /tmp.
        try fm.removeItem(atPath: share)
        let bare = try Self.runFromTmp(exe, ["lab", "list"])
        #expect(bare.status == 1)
        #expect(bare.stderr.contains("scenarios: not found; searched, in order:"), "\(bare.stderr)")
        #expect(bare.stderr.contains("\(share)/Scenarios (the install prefix of this bootlab)"), "\(bare.stderr)")
        #expect(!bare.stderr.contains("/tmp/Scenarios"), "\(bare.stderr)")
        let drivers = try Self.runFromTmp(exe, ["reconfigure", "--disk", raw, "--target", "kvm-virtio", "--dry-run"])
        #expect(drivers.status == 1)
        #expect(drivers.stderr.contains("drivers: not found; searched, in order:"), "\(drivers.stderr)")
        #expect(drivers.stderr.contains("\(share)/Scenarios/drivers.json (the install prefix of this bootlab)"), "\(drivers.stderr)")
    }

    @Test func tcpEndpointsParse() throws {
        #expect(try TCPEndpoint(parsing: "127.0.0.1:10809") == TCPEndpoint(host: "127.0.0.1", port: 10809))
        #expect(try TCPEndpoint(parsing: "[::1]:0") == TCPEndpoint(host: "::1", port: 0))
        #expect(try TCPEndpoint(parsing: "[::1]:0").description == "[::1]:0")
        for bad in ["10809", ":10809", "host:", "host:65536", "[::1]10809"] {
            #expect(throws: FrontendError.self, "\(bad)") { try TCPEndpoint(parsing: bad) }
        }
    }
}
