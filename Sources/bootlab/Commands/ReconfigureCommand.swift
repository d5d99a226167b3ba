import ArgumentParser
import BlockCore
import DiskFormats
import Exposure
import Foundation
import PluginReconfigure
import Processes
import Reconfigure

/// `bootlab reconfigure`: make the OS on a disk image fit a hypervisor target, writing every
/// change into a reconfiguration layer — the plugin's own layer (`bootlab reconfigure PLUGIN`),
/// or a sparse raw file the size of the disk (`--disk IMAGE --layer OUT`).
struct ReconfigureCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reconfigure",
        abstract: "Fit the OS on a disk to a hypervisor target's hardware; changes go to a layer, never to the disk.",
        discussion: """
        With a plugin file, the changes go to its reconfiguration layer (PLUGIN.reconf and .reconf.map) \
        and the plugin is re-rendered, so `bootlab mount`/`serve` (and --raw) show the reconfigured disk. \
        The backup is only read. Running it again changes nothing more.
        """)

    @Argument(help: "A plugin file written by `bootlab expose`.")
    var plugin: String?

    @Option(name: .long, help: "Disk image (anything QEMU opens; a json: or nbd+unix: spec works).")
    var disk: String?

    @Option(name: .customLong("format"), help: "QEMU format of the disk image.")
    var format = "raw"

    @Option(name: .long, help: "Target (hyperv-gen1, kvm-virtio, vmware-pvscsi, …) or controller (ide, virtio-blk, …).")
    var target: String

    @Option(name: .long, help: "With --disk: the reconfiguration layer, a sparse raw file the size of the disk (created if missing).")
    var layer: String?

    @Option(name: .long, help: "Driver data (default: $BOOTLAB_DRIVERS, else drivers.json of the installed or built-in data; docs/installing.md).")
    var drivers: String?

    @Flag(name: .long, help: "Report what would change; write nothing.")
    var dryRun = false

    @Flag(name: .long, help: "Print the report as JSON.")
    var json = false

    /// A deliberate fault for the lab (a driver left out of the reconfigured initramfs), like
    /// `--inject-fault` on `mount`/`serve`: hidden, never read from the environment.
    @Option(name: .customLong("omit-module"), help: ArgumentHelp("Leave this module out (a deliberate fault, for lab tests).", visibility: .hidden))
    var omitModules: [String] = []

    @OptionGroup var access: PluginAccessOptions
    @OptionGroup var faults: FaultInjectionOptions

    func run() throws {
        do {
            let driversPath = try DriverDatabase.defaultPath(explicit: drivers)
            var db = try DriverDatabase.load(path: driversPath)
            // Lab fault (`omit-driver:NAME`, test-only): the module is left out of what is injected.
            let omitted = try faults.plan().omittedDrivers
            if !omitted.isEmpty {
                for k in db.controllers.keys { db.controllers[k]!.linuxModules.removeAll { omitted.contains($0) } }
            }
            // The engine leaves these out of the controller's, the adapter's and the hypervisor's
            // modules alike (the fault and `--omit-module` are the same fault, two spellings).
            let omitModules = omitModules + omitted
            if let plugin {
                guard disk == nil, layer == nil else { throw ValidationError("give a plugin file, or --disk and --layer, not both") }
                let result = try Self.reconfigurePlugin(plugin, target: target, drivers: db,
                                                        access: try access.openOptions(plugins: [plugin]), dryRun: dryRun,
                                                        omitModules: omitModules)
                if json { try BackupCommand.printJSON(result) } else { Self.printReport(result.report, dryRun: dryRun, layer: result.layer) }
                return
            }
            guard let disk, let layer else { throw ValidationError("give a plugin file, or --disk IMAGE and --layer OUT") }
            let size = try diskSize(disk)
            let layerFile: RawFile
            if FileManager.default.fileExists(atPath: layer) {
                layerFile = try RawFile(path: layer, writable: true)
            } else {
                layerFile = try RawFile.create(path: layer, size: size)
            }
            let report = try Reconfigurator.reconfigure(image: DiskImage(path: disk, format: format), layer: layerFile,
                                                        target: target, drivers: db, options: .init(dryRun: dryRun, omitModules: omitModules))
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try enc.encode(report), as: UTF8.self))
            } else {
                Self.printReport(report, dryRun: dryRun, layer: nil)
            }
        } catch let e as ExitCode {
            throw e
        } catch let e as ValidationError {
            throw e
        } catch {
            writeStandardError("bootlab reconfigure: \(error)\n")
            throw ExitCode(1)
        }
    }

    /// Shared with `expose --target`: reconfigure a plugin through its layer.
    static func reconfigurePlugin(_ plugin: String, target: String, drivers: DriverDatabase, access: PluginFile.OpenOptions,
                                  dryRun: Bool, omitModules: [String] = []) throws -> PluginReconfiguration.Result {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var options = PluginReconfiguration.Options(target: target, drivers: drivers, bootlabExecutable: exe, access: access, dryRun: dryRun)
        options.omitModules = omitModules
        return try PluginReconfiguration.run(pluginPath: plugin, options: options)
    }

    static func printReport(_ report: ReconfigurationReport, dryRun: Bool, layer: PluginFile.LayerRecord?) {
        print("target \(report.target) (controller \(report.controller)), OS \(report.os), boot loader \(report.bootLoader ?? "?"), kernel \(report.kernelVersion ?? "?")")
        print("original drivers: \(report.originalDrivers.joined(separator: " "))")
        if let nic = report.nic { print("network adapter: \(nic)") }
        if !report.skippedModules.isEmpty {
            print("not in the guest's modules.dep, not added: \(report.skippedModules.joined(separator: " "))")
        }
        if report.changes.isEmpty { print("no changes: the guest already fits \(report.target)") }
        for c in report.changes { print("  \(c.kind) \(c.location): \(c.detail)") }
        print("layer: \(report.layerBytesWritten) bytes written in \(report.layerWrites.count) ranges\(dryRun ? " (dry run)" : "")")
        if let layer {
            print("plugin layer \(layer.layer): \(layer.layerBytes) bytes held, digest \(layer.layerDigest.prefix(16))…; plugin \(layer.pluginRewritten ? "re-rendered" : "unchanged") (\(layer.allocatedBlocks) VHDX blocks)")
        }
    }

    /// The virtual size of `--disk`, for creating the layer. A raw or VHDX file is read by
    /// DiskFormats itself (the same probe as `bootlab info`); only what DiskFormats does not read —
    /// another QEMU format (qcow2, vmdk, …) or a `json:`/`nbd+unix:` spec, which `--disk` accepts
    /// because the engine hands it to QEMU — is asked of `qemu-img info`.
    private func diskSize(_ disk: String) throws -> UInt64 {
        if let known = DiskImageFormat(rawValue: format), known != .backupImage, FileManager.default.fileExists(atPath: disk) {
            do {
                return try openDiskImage(path: disk, format: known).size
            } catch {
                throw ReconfigureError.guest("cannot open \(disk) as \(format): \(error)")
            }
        }
        let r = try Command(["qemu-img", "info", "--output=json", "-f", format, disk]).run(check: false)
        guard r.termination.succeeded,
              let obj = try JSONSerialization.jsonObject(with: Data(r.stdout)) as? [String: Any],
              let size = (obj["virtual-size"] as? NSNumber)?.uint64Value else {
            throw ReconfigureError.guest("qemu-img info cannot open \(disk) as \(format)")
        }
        return size
    }
}
