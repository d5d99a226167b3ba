/// The steps and validators of one cell. This is the one place new stages plug in: the backup,
/// exposure and reconfiguration steps go between `GenerateStep` and the validators, and their
/// validators (qemu-img, libvhdi, immutability, overlay) join the list. A step that makes a disk
/// to boot publishes it as `ArtefactRole.bootDisk`; the boot validator then boots that instead of
/// the raw source disk.
public struct Pipeline: Sendable {
    public var steps: [any LabStep]
    public var validators: [any Validator]

    public init(steps: [any LabStep], validators: [any Validator]) {
        self.steps = steps
        self.validators = validators
    }

    public static func standard(for scenario: Scenario, target: Target) -> Pipeline {
        let steps: [any LabStep] = [GenerateStep(), BackupStep(), ExposeStep()]
            + (scenario.reconfigure ? [ReconfigureStep()] : []) + [MountStep()]
        // Deferred open first: nothing may have read payload yet. Immutability last.
        var validators: [any Validator] = [DeferredOpenValidator(), GoldenValidator()] + exposureValidators(for: scenario)
        // A `not_booted` cell has no boot check at all (its reason is the cell's expectation, shown
        // in the report); the Windows-hives machines are checked by reading their hives back.
        if case .notBooted = scenario.expectation(for: target.name) {} else {
            for machine in scenario.machines { validators.append(BootValidator(machine: machine.name)) }
        }
        for machine in scenario.machines where machine.os == .windowsHives {
            validators.append(WindowsHivesValidator(machine: machine.name))
        }
        if scenario.materialize == true { validators.append(MaterializeValidator()) }
        // The network adapter, from the console the boot left (cells that must boot only).
        if target.nic != nil, scenario.expectation(for: target.name) == .boots {
            // The tiny Linux's init prints the adapter lines; the Debian machine's units do not.
            for machine in scenario.machines where machine.os == nil { validators.append(NICValidator(machine: machine.name)) }
        }
        // What the real hypervisor needs beyond what QEMU emulates for it (Hyper-V gen2's VMBus
        // drivers), read back from the reconfigured disk's initramfs.
        if scenario.reconfigure { validators.append(HypervisorModulesValidator()) }
        // A Debian UEFI install's /boot/efi entry against the ESP of the disk it boots from.
        for machine in scenario.machines where machine.os == .debianUEFI { validators.append(FstabESPValidator(machine: machine.name)) }
        validators.append(ImmutabilityValidator())
        return Pipeline(steps: steps, validators: validators)
    }

    /// Checks of the exposed disks by other readers (qemu-img, libvhdi, our checker), the change
    /// sets' files, and the write overlay.
    public static func exposureValidators(for scenario: Scenario) -> [any Validator] {
        var v: [any Validator] = [QemuImgCheckValidator(), CompareValidator(), IndependentReaderValidator(), BootLabCheckValidator()]
        if scenario.machines.contains(where: \.isUEFI) { v.append(UEFIDiskValidator()) }
        if !scenario.backup.incrementals.isEmpty { v.append(ChangedFilesValidator()) }
        v.append(WriteOverlayValidator())
        return v
    }
}
