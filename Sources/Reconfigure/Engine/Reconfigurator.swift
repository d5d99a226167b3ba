import BlockCore
import Foundation

public struct ReconfigureOptions: Sendable {
    /// Inspect and report what would change; write nothing to the layer.
    public var dryRun: Bool
    /// Where the scratch overlay lives (default: the system temporary directory).
    public var workDirectory: URL?
    /// A deliberate fault for the lab's must-shows and mutation runs (`--inject-fault omit-driver:NAME`;
    /// a Windows guest's storage service of that name too): these
    /// module names are left out of what the target needs, as a buggy engine would. Empty in
    /// real use; nothing reads it from the environment.
    public var omitModules: [String]

    public init(dryRun: Bool = false, workDirectory: URL? = nil, omitModules: [String] = []) {
        self.dryRun = dryRun
        self.workDirectory = workDirectory
        self.omitModules = omitModules
    }
}

/// The reconfiguration engine's entry point.
public enum Reconfigurator {
    /// Makes the OS on `image` fit `target` and writes every change into `layer`.
    ///
    /// - `image`: any disk image QEMU can open (path or `json:`/`nbd+unix:` spec, and its format).
    ///   It is only ever opened read-only.
    /// - `layer`: the caller's reconfiguration layer, the same size as the disk. Ranges it reports
    ///   as `.data` are applied on top of the image before inspection (earlier runs' changes);
    ///   ranges it reports as `.absent`/`.zero` fall through to the image. The engine writes only
    ///   4 KiB blocks whose bytes it changed, then flushes.
    /// - `target`: a target name from the drivers data (`hyperv-gen1`, `kvm-virtio`, …) or a
    ///   controller name (`ide`, `virtio-blk`, …).
    ///
    /// Idempotent: a second run finds nothing to do, reports no changes and writes nothing.
    public static func reconfigure(image: DiskImage, layer: WritableBlockSource, target: String,
                                   drivers: DriverDatabase, options: ReconfigureOptions = .init()) throws -> ReconfigurationReport {
        let (controllerName, storage) = try drivers.controller(for: target)
        let nic = try drivers.nic(for: target)
        // Linux guests get the network adapter's modules with the storage controller's (the
        // method's "input output device drivers"); Windows services stay the controller's.
        let omitted = Set(options.omitModules.map(ModuleDependencies.normalize))
        var controller = storage
        controller.linuxModules = storage.linuxModules.filter { !omitted.contains(ModuleDependencies.normalize($0)) }
        // The same fault for a Windows guest: the named service is left out (not made boot-start).
        controller.windows.services = storage.windows.services.filter { !omitted.contains(ModuleDependencies.normalize($0.name)) }
        let nicModules = (nic?.nic.linuxModules ?? []).filter { !omitted.contains(ModuleDependencies.normalize($0)) }
        // What the real hypervisor needs that its QEMU stand-in does not emulate (Hyper-V gen2's
        // VMBus devices): installed like the adapter's modules.
        let hypervisorModules = (drivers.targets[target]?.hypervisorModules ?? []).filter { !omitted.contains(ModuleDependencies.normalize($0)) }
        var report = ReconfigurationReport(target: target, controller: controllerName, os: "unknown")
        report.nic = nic?.name
        let session = try OverlaySession(image: image, layer: layer, workDirectory: options.workDirectory)
        do {
            let os = try LinuxReconfigurer(session: session, controller: controller, nicModules: nicModules, hypervisorModules: hypervisorModules).run(report: &report, dryRun: options.dryRun)
                || WindowsReconfigurer(session: session, controller: controller).run(report: &report, dryRun: options.dryRun)
            // Boot code last: it only writes sectors before the first partition.
            let grub = try GrubReconfigurer(session: session).run(report: &report, dryRun: options.dryRun)
            if grub && !os {
                report.os = "linux-grub"
                // No initramfs step ran, so nothing else would keep /boot/efi on the disk's ESP.
                _ = try LinuxReconfigurer(session: session, controller: controller).keepBootEFIEntries(report: &report, dryRun: options.dryRun)
            }
            guard os || grub else {
                throw ReconfigureError.noOperatingSystem("no boot loader configuration (syslinux/extlinux/GRUB), initramfs-tools root or Windows SYSTEM hive; libguestfs saw \(session.describeDisk())")
            }
        } catch {
            _ = try? session.finish(into: layer, copyChanges: false)
            throw error
        }
        let writes = try session.finish(into: layer, copyChanges: !options.dryRun && report.changed)
        report.layerWrites = writes
        report.layerBytesWritten = writes.reduce(0) { $0 + $1.length }
        return report
    }
}
