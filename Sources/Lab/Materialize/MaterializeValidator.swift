import DiskFormats
import Exposure
import Foundation

/// The replacement file, interrupted and resumed (issue 13, docs/replacement-file.md), on a copy
/// of each cell's plugin in the cell's scratch directory (`materialize/`; the backup is linked
/// there, never written): `bootlab materialize --stop-after` stops the fill part way and
/// `bootlab status --json` must show partial progress with no fill running; a second run is
/// killed (SIGKILL at the `fill-chunk` fault point) further on; the third resumes and must copy
/// exactly the chunks the journal did not record; `bootlab finalize` switches the files. The
/// finalized native file must then be `cmp`-identical to `bootlab convert -O F` of the plugin,
/// be opened by qemu-img with the right format and size, pass `qemu-img check` (QEMU's vpc has
/// none), equal the expected disk (`qemu-img compare`) and the target's independent reader's view
/// of it, no longer be a plugin, and — on the scenario's first target — boot to the marker with
/// QEMU opening it directly (no filter).
public struct MaterializeValidator: Validator {
    public let name = "materialize"
    public init() {}

    /// The fill's chunk size: small disks still give a few dozen chunks to interrupt between.
    static let chunkSize: UInt64 = 1 << 20

    public func validate(in context: CellContext) throws -> StepOutcome {
        guard let fe = context.frontEnd else { return .fail("no front-end: the expose step did not run") }
        guard context.scenario.backup.vault == nil else { return .fail("materialize scenarios take a plain backup (no vault)") }
        let format = fe.format
        let exe = try BootLabExecutable.path()
        let access = try ExposeStep.accessArguments(context)
        let scratch = context.directory.appendingPathComponent("materialize")
        try? FileManager.default.removeItem(at: scratch)
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        let plug = ExposeStep.pluginDirectory(context)
        let backupsBefore = try BackupStep.digests(of: plug)
        var notes: [String] = []
        for m in context.scenario.machines {
            guard let original = context.plugins[m.name] else { return .fail("\(m.name): no plugin file") }
            // The plugin (sparse) and its companions copied, the backup files linked, at the same
            // relative places: the copy points at the same backup bytes.
            let fileName = URL(fileURLWithPath: original).lastPathComponent
            let p = scratch.appendingPathComponent(fileName).path
            for suffix in [""] + format.driver.pluginCompanionSuffixes where FileManager.default.fileExists(atPath: original + suffix) {
                try Shell.run("cp", ["--sparse=always", original + suffix, p + suffix])
            }
            for entry in try FileManager.default.contentsOfDirectory(atPath: plug.path) where !entry.hasPrefix(fileName) {
                let from = plug.appendingPathComponent(entry).path
                var isDir: ObjCBool = false
                guard FileManager.default.fileExists(atPath: from, isDirectory: &isDir), !isDir.boolValue else { continue }
                try FileManager.default.linkItem(atPath: from, toPath: scratch.appendingPathComponent(entry).path)
            }
            func bootlab(_ args: [String], opensBackup: Bool = true) throws -> Shell.Output {
                try Shell.run(exe, args + (opensBackup ? access : []), check: false)
            }
            func status() throws -> MaterializeStatus {
                let r = try bootlab(["status", p, "--json"], opensBackup: false)
                guard r.status == 0 else { throw LabError.cell(m.name, reason: "bootlab status exit \(r.status): \(r.stderr.suffix(300))") }
                return try JSONDecoder().decode(MaterializeStatus.self, from: Data(r.stdout.utf8))
            }
            func fail(_ why: String, _ out: Shell.Output? = nil) -> StepOutcome {
                .fail("\(m.name): \(why)" + (out.map { " (exit \($0.status): \(($0.stdout + $0.stderr).suffix(300)))" } ?? ""),
                      details: out.map { $0.stdout + $0.stderr })
            }

            // The stream, as convert materializes it (its pointer marked as finalize marks it).
            let reference = scratch.appendingPathComponent("convert-" + fileName).path
            let conv = try bootlab(["convert", p, reference, "-O", format.name])
            guard conv.status == 0 else { return fail("bootlab convert -O \(format.name) failed", conv) }

            // 1. Stopped part way.
            let total = try status().totalBytes
            let third = (total / 3 / Self.chunkSize) * Self.chunkSize
            guard third >= Self.chunkSize else { return fail("the plugin (\(total) bytes) is too small to interrupt a fill of 1 MiB chunks") }
            let first = try bootlab(["materialize", p, "--chunk-size", "1M", "--stop-after", "\(third)", "--json"])
            guard first.status == 0 else { return fail("materialize --stop-after failed", first) }
            let s1 = try status()
            guard s1.phase == "filling", !s1.running, s1.doneBytes > 0, s1.doneBytes < s1.totalBytes, s1.filledChunks > 0 else {
                return fail("after --stop-after \(third): status \(s1.phase), \(s1.doneBytes)/\(s1.totalBytes) bytes, running \(s1.running): not partial progress")
            }
            let probe = try Shell.run("qemu-img", ["info", "--output=json", p + ".replacement"], check: false)
            guard probe.status == 0, probe.stdout.contains("\"format\": \"raw\"") else {
                return fail("the half-filled replacement is taken for a \(format.name) file (its signature must come last)", probe)
            }

            // 2. Killed further on (SIGKILL at a fault point: no clean stop).
            let killAt = s1.filledChunks + max(1, (s1.chunks - s1.filledChunks) / 2)
            guard killAt < s1.chunks else { return fail("too few chunks (\(s1.chunks)) to kill the fill part way") }
            // Throttled, a batch is a quarter second of the rate: 4M/s gives one-chunk batches,
            // so the kill lands between chunks however small the disk.
            let killed = try bootlab(["materialize", p, "--rate", "4M", "--inject-fault", "kill:fill-chunk:\(killAt)"])
            guard killed.status == 128 + SIGKILL else { return fail("materialize was to be killed at chunk \(killAt)", killed) }
            let s2 = try status()
            guard s2.phase == "filling", !s2.running, s2.filledChunks == killAt else {
                return fail("after kill -9 at chunk \(killAt): status \(s2.phase), \(s2.filledChunks)/\(s2.chunks) chunks, running \(s2.running)")
            }

            // 3. Resumed: exactly the chunks not recorded are copied, then verified and switched.
            let resumed = try bootlab(["materialize", p, "--json"])
            guard resumed.status == 0,
                  let s3 = try? JSONDecoder().decode(MaterializeStatus.self, from: Data(resumed.stdout.utf8)) else {
                return fail("resumed materialize failed", resumed)
            }
            guard s3.phase == "complete", s3.doneBytes == s3.totalBytes else { return fail("resumed fill ended \(s3.phase) at \(s3.doneBytes)/\(s3.totalBytes)") }
            guard s3.copiedChunks == s2.chunks - s2.filledChunks else {
                return fail("the resumed fill copied \(s3.copiedChunks ?? -1) chunks; \(s2.chunks - s2.filledChunks) were not recorded (finished chunks re-copied?)")
            }

            // 4. Finalized.
            let fin = try bootlab(["finalize", p, "--json"])
            guard fin.status == 0 else { return fail("finalize failed", fin) }
            guard try status().phase == "finalized" else { return fail("status after finalize is not finalized") }
            guard !PluginFile.isPlugin(path: p), PluginFile.isPlugin(path: p + ".plugin") else {
                return fail("after finalize the native file must not be a plugin and the old plugin (\(fileName).plugin) must be")
            }

            // 5. The finalized file by tools we did not write.
            let cmp = try Shell.run("cmp", [p, reference], check: false)
            guard cmp.status == 0 else { return fail("finalized file differs from convert -O \(format.name) of the plugin", cmp) }
            let expected = try ExpectedDisk.path(machine: m, in: context)
            let expectedSize = (try FileManager.default.attributesOfItem(atPath: expected)[.size] as? NSNumber)?.uint64Value ?? 0
            let info = try Shell.run("qemu-img", ["info", "--output=json", "-f", format.qemuDriver, p], check: false)
            guard info.status == 0, info.stdout.contains("\"format\": \"\(format.qemuDriver)\""),
                  info.stdout.contains("\"virtual-size\": \(expectedSize),") else {
                return fail("qemu-img info -f \(format.qemuDriver) does not report a \(expectedSize)-byte \(format.qemuDriver) disk", info)
            }
            var checked = "qemu-img check clean"
            let check = try Shell.run("qemu-img", ["check", "-f", format.qemuDriver, p], check: false)
            if format.qemuDriver == "vpc", check.status == 63 {
                checked = "qemu-img has no vpc check; bootlab check clean"
                let own = try Shell.run(exe, ["check", p], check: false)
                guard own.status == 0 else { return fail("bootlab check of the finalized VHD", own) }
            } else if check.status != 0 || !check.stdout.contains("No errors were found") {
                return fail("qemu-img check of the finalized file", check)
            }
            let compare = try Shell.run("qemu-img", ["compare", "-f", format.qemuDriver, "-F", "raw", p, expected], check: false)
            guard compare.status == 0 else { return fail("qemu-img compare with the expected disk", compare) }
            var reader = "\(format.name): no independent reader in Debian"
            if let r = format.independentReader {
                let out = try Shell.run(r.info, [p], check: false)
                guard out.status == 0, out.stdout.contains("\(expectedSize) bytes") else { return fail("\(r.info) of the finalized file", out) }
                reader = "\(r.info) \(expectedSize) bytes"
            }

            // 6. QEMU boots the finalized file directly (first target only: a boot costs 10-20 s).
            var booted = "boot on \(context.scenario.targets.first ?? "?") only"
            if context.target.name == context.scenario.targets.first {
                let log = context.directory.appendingPathComponent("console-materialized-\(m.name).log")
                let b = try BootRunner.boot(disk: .file(path: p, format: format.qemuDriver), target: context.target, marker: m.marker,
                                            consoleLog: log, timeout: context.options.bootTimeout)
                guard b.markerSeen else {
                    return .fail("\(m.name): the finalized file did not boot: \(b.failureLine ?? (b.timedOut ? "timed out" : "no marker"))",
                                 attachments: ["console": b.consoleLogPath])
                }
                booted = "booted directly to the marker in \(String(format: "%.1f s", b.seconds))"
            }
            notes.append("\(m.name): stopped at \(s1.filledChunks)/\(s1.chunks) chunks, killed at \(s2.filledChunks), resumed copying \(s3.copiedChunks ?? 0) (none re-copied); finalized \(format.name) = convert (cmp), \(checked), = expected disk (qemu-img compare), \(reader); \(booted)")
            try? FileManager.default.removeItem(atPath: p + ".replacement")
        }
        guard try BackupStep.digests(of: plug) == backupsBefore else { return .fail("a backup file changed while materializing") }
        try? FileManager.default.removeItem(at: scratch)
        return .pass(notes.joined(separator: "; "))
    }
}
