import BackupImage
import BlockCore
import Exposure
import Foundation

/// Exposes every machine's backup as a plugin file and mounts the plugin directory through
/// `bootlab mount` (FUSE, a child process): the mounted `<machine>.vhdx` is the boot disk the
/// validators check and boot — synthesized on the fly from the backup, never restored.
public struct ExposeStep: LabStep {
    public let name = "expose"
    public init() {}

    public static func mountpoint(_ context: CellContext) -> URL { context.directory.appendingPathComponent("mnt") }
    public static func pluginDirectory(_ context: CellContext) -> URL { context.directory.appendingPathComponent("plug") }

    public func run(in context: CellContext) throws -> StepOutcome {
        let plug = Self.pluginDirectory(context)
        var opts = PluginFile.ExposeOptions()
        opts.composer.partitionStartLBA = context.scenario.backup.exposePartitionStart
        var mountArgs: [String] = []
        if context.scenario.backup.encryption != .none {
            let pf = try BackupStep.passphraseFile(in: context)
            opts.passphrase = .file(pf)
            mountArgs += ["--passphrase-file", pf]
        }
        if let vault = context.scenario.backup.vault {
            let v = plug.appendingPathComponent("vault-\(vault)").path
            opts.vault = v
            mountArgs += ["--vault", v]
        }
        var notes: [String] = []
        for machine in context.scenario.machines {
            guard let backup = context.backups[machine.name] else { return .fail("\(machine.name): no backup") }
            let plugin = plug.appendingPathComponent("\(machine.name).vhdx").path
            let r = try PluginFile.expose(backupPath: backup, pluginPath: plugin, options: opts)
            context.plugins[machine.name] = plugin
            context.put(Artefact(role: ArtefactRole.plugin, machine: machine.name, disk: .file(path: plugin, format: "vhdx"), files: [plugin]))
            notes.append("\(machine.name): \(r.composition)" + (r.partitionStartLBA.map { " at LBA \($0)" } ?? "") + (r.patchedBytes > 0 ? ", BPB patched" : ""))
        }
        let mnt = Self.mountpoint(context)
        try FileManager.default.createDirectory(at: mnt, withIntermediateDirectories: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try BootLabExecutable.path())
        process.arguments = ["mount", plug.path, mnt.path, "--stats-file", context.directory.appendingPathComponent("mount-stats.json").path] + mountArgs
        let log = context.directory.appendingPathComponent("mount.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: log)
        process.standardError = try FileHandle(forWritingTo: log)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        context.addCleanup {
            _ = try? Shell.run("fusermount3", ["-u", mnt.path], check: false)
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
        // Wait (bounded) until the mount is live.
        var waited = 0.0
        while !Self.isMounted(mnt.path) {
            guard process.isRunning, waited < 20 else {
                let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                return .fail("bootlab mount did not come up: \(text.suffix(300))")
            }
            usleep(50_000)
            waited += 0.05
        }
        for machine in context.scenario.machines {
            let exposed = mnt.appendingPathComponent("\(machine.name).vhdx").path
            context.put(Artefact(role: ArtefactRole.bootDisk, machine: machine.name, disk: .file(path: exposed, format: "vhdx"), files: [exposed]))
        }
        return .pass(notes.joined(separator: "; ") + "; mounted through FUSE")
    }

    static func isMounted(_ path: String) -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
        return text.split(separator: "\n").contains { line in
            let f = line.split(separator: " ")
            return f.count > 4 && f[4] == path
        }
    }
}
