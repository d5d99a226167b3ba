import Foundation

/// Mounts the cell's plugin directory through `bootlab mount` (FUSE, a child process): the
/// mounted `<machine>.vhdx` is the boot disk the validators check and boot — synthesized on the
/// fly from the backup (and the reconfiguration layer, when there is one), never restored.
public struct MountStep: LabStep {
    public let name = "mount"
    public init() {}

    public func run(in context: CellContext) throws -> StepOutcome {
        let plug = ExposeStep.pluginDirectory(context)
        let mnt = ExposeStep.mountpoint(context)
        try FileManager.default.createDirectory(at: mnt, withIntermediateDirectories: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try BootLabExecutable.path())
        process.arguments = ["mount", plug.path, mnt.path, "--stats-file", context.directory.appendingPathComponent("mount-stats.json").path] + (try ExposeStep.accessArguments(context))
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
        while !ExposeStep.isMounted(mnt.path) {
            guard process.isRunning, waited < 20 else {
                let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                return .fail("bootlab mount did not come up: \(text.suffix(300))")
            }
            usleep(50_000)
            waited += 0.05
        }
        for machine in context.scenario.machines {
            let exposed = mnt.appendingPathComponent("\(machine.name).vhdx").path
            // A reconfigured disk holds the appliance's file-system timestamps: not byte-stable.
            context.put(Artefact(role: ArtefactRole.bootDisk, machine: machine.name, disk: .file(path: exposed, format: "vhdx"),
                                 files: [exposed], deterministic: !context.scenario.reconfigure))
        }
        return .pass("mounted through FUSE")
    }

}
