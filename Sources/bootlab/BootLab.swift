import ArgumentParser
import BlockCore

@main
struct BootLab: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bootlab",
        abstract: "Expose an image backup to a hypervisor as a bootable native disk, and prove it.",
        version: BootLabVersion.string,
        subcommands: [
            // Each front-end command lives in Commands/<Name>Command.swift.
            DemoCommand.self,
            ConvertCommand.self,
            LabCommand.self,
            CertifyCommand.self,
            ReconfigureCommand.self,
            BackupCommand.self,
            InfoCommand.self,
            CheckCommand.self,
            CreateCommand.self,
            MountCommand.self,
            ServeCommand.self,
            ExposeCommand.self,
            MaterializeCommand.self,
            StatusCommand.self,
            FinalizeCommand.self,
            FuzzCommand.self,
        ]
    )
}
