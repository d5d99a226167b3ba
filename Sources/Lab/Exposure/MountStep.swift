import Foundation

/// Starts the scenario's front-end over the cell's plugin directory: `bootlab mount` (FUSE; the
/// mounted `<machine>.<format>` is the boot disk) or `bootlab serve` (NBD; QEMU's driver for the
/// target's native format reads the export). Child processes either way; the disks are synthesized on the fly from the backup
/// (and the reconfiguration layer, when there is one), never restored.
public struct MountStep: LabStep {
    public let name = "mount"
    public init() {}

    public func run(in context: CellContext) throws -> StepOutcome {
        let kind = context.scenario.backup.frontend
        let fe = try FrontEndProcess.start(kind, plugins: context.plugins, pluginDirectory: ExposeStep.pluginDirectory(context),
                                           extraArguments: try ExposeStep.accessArguments(context) + ExposeStep.faultArguments(context),
                                           format: try LabDiskFormat.of(context.target), label: "mnt", in: context)
        context.frontEnd = fe
        for machine in context.scenario.machines {
            // Through FUSE the exposed file is a file: its digest is golden. Over NBD there is no
            // file; the plugin's digest and the compare validator cover it. A reconfigured disk
            // holds the appliance's file-system timestamps: not byte-stable.
            let files = kind == .fuse ? [fe.exposedPath(machine: machine.name)] : []
            context.put(Artefact(role: ArtefactRole.bootDisk, machine: machine.name, disk: fe.diskReference(machine: machine.name),
                                 files: files, deterministic: !context.scenario.reconfigure))
        }
        return .pass(kind == .fuse ? "mounted through FUSE" : "served over NBD")
    }
}
