import Foundation

/// Writes go to an overlay, never to the backup: through a second, *writable* front-end
/// (`bootlab mount --writable --overlay-dir`, or `bootlab serve --overlay`), `qemu-io` writes a
/// pattern into the virtual disk and reads it back (also from a fresh process); the read-only
/// front-end still does not show the pattern, the overlay file holds data, and the backup files
/// and plugin file keep their digests.
public struct WriteOverlayValidator: Validator {
    public let name = "write-overlay"
    public init() {}

    /// 4 KiB at the start of the disk: block 0 always holds the MBR, so it is allocated in the
    /// VHDX and QEMU writes it in place (no BAT update).
    static let offset = 0, length = 4096, pattern = "0xa5"

    public func validate(in context: CellContext) throws -> StepOutcome {
        guard let ro = context.frontEnd else { return .fail("no front-end: the expose step did not run") }
        let plug = ExposeStep.pluginDirectory(context)
        let overlays = context.directory.appendingPathComponent("overlays")
        try? FileManager.default.removeItem(at: overlays)
        try FileManager.default.createDirectory(at: overlays, withIntermediateDirectories: true)
        var notes: [String] = []
        for m in context.scenario.machines {
            guard let plugin = context.plugins[m.name] else { return .fail("\(m.name): no plugin file") }
            let backupsBefore = try BackupStep.digests(of: plug)
            let pluginBefore = try Digest.file(URL(fileURLWithPath: plugin))
            var extra = try ExposeStep.accessArguments(context)
            let overlayFile: URL
            switch ro.kind {
            case .fuse:
                extra += ["--writable", "--overlay-dir", overlays.path]
                overlayFile = overlays.appendingPathComponent(ro.format.fileName(machine: m.name) + ".overlay")
            case .nbd:
                overlayFile = overlays.appendingPathComponent("\(m.name).overlay")
                extra += ["--overlay", overlayFile.path]
            }
            let rw = try FrontEndProcess.start(ro.kind, plugins: [m.name: plugin], pluginDirectory: plug,
                                               extraArguments: extra + ExposeStep.faultArguments(context), format: ro.format,
                                               label: "rw-\(m.name)", in: context)
            defer { rw.stop() }
            let write = "write -P \(Self.pattern) \(Self.offset) \(Self.length)", read = "read -P \(Self.pattern) \(Self.offset) \(Self.length)"
            let w = try qemuIO(["--image-opts", rw.imageOptions(machine: m.name), "-c", write, "-c", read])
            guard w.ok else { return .fail("\(m.name): write through the writable front-end failed: \(w.text.suffix(300))", details: w.text) }
            let again = try qemuIO(["-r", "--image-opts", rw.imageOptions(machine: m.name), "-c", read])
            guard again.ok else { return .fail("\(m.name): the written bytes do not read back from a new process: \(again.text.suffix(300))", details: again.text) }
            let base = try qemuIO(["-r", "--image-opts", ro.imageOptions(machine: m.name), "-c", read])
            guard !base.ok, base.text.contains("Pattern verification failed") else {
                return .fail("\(m.name): the read-only exposed disk shows the overlay's write (or could not be read): \(base.text.suffix(300))", details: base.text)
            }
            let overlaySize = (try? FileManager.default.attributesOfItem(atPath: overlayFile.path)[.size] as? NSNumber)?.uint64Value ?? 0
            guard overlaySize > 0 else {
                let listing = (try? FileManager.default.contentsOfDirectory(atPath: overlays.path)) ?? []
                return .fail("\(m.name): no data in the overlay \(overlayFile.lastPathComponent) (overlay directory: \(listing))")
            }
            let backupsAfter = try BackupStep.digests(of: plug)
            guard backupsAfter == backupsBefore else { return .fail("\(m.name): a backup file changed while writing through the overlay") }
            guard try Digest.file(URL(fileURLWithPath: plugin)) == pluginBefore else { return .fail("\(m.name): the plugin file changed while writing through the overlay") }
            notes.append("\(m.name): \(Self.length) bytes written and read back through \(ro.kind.rawValue) overlay (\(overlaySize) bytes); base and backup unchanged")
        }
        return .pass(notes.joined(separator: "; "))
    }

    struct IOResult { var ok: Bool; var text: String }

    func qemuIO(_ args: [String]) throws -> IOResult {
        let r = try Shell.run("qemu-io", args, check: false)
        let text = r.stdout + r.stderr
        return IOResult(ok: r.status == 0 && !text.contains("Pattern verification failed") && !text.contains("failed:"), text: text)
    }
}
