import BlockCore
import Foundation

/// Driver knowledge as data (`Scenarios/drivers.json`, documented in docs/reconfigure.md):
/// per storage controller, the Linux modules and the Windows services and PCI IDs it needs;
/// per hypervisor target, which controller it emulates.
public struct DriverDatabase: Sendable, Codable, Equatable {
    public struct WindowsService: Sendable, Codable, Equatable {
        public var name: String
        public var group: String
        public var imagePath: String
        public var tag: UInt32?
    }

    public struct CriticalDevice: Sendable, Codable, Equatable {
        /// The CriticalDeviceDatabase key name, e.g. `pci#ven_8086&dev_7010`.
        public var id: String
        public var service: String
        public var classGUID: String
    }

    public struct WindowsDrivers: Sendable, Codable, Equatable {
        public var services: [WindowsService]
        public var criticalDevices: [CriticalDevice]
    }

    public struct Controller: Sendable, Codable, Equatable {
        public var description: String
        /// QEMU arguments that attach `{disk}` (format `{format}`) behind this controller.
        public var qemu: [String]
        /// Module names; their dependencies come from the guest's modules.dep.
        public var linuxModules: [String]
        public var windows: WindowsDrivers
    }

    /// A network adapter a hypervisor emulates (`nics` in drivers.json): the Linux modules that
    /// drive it join the controller's in a reconfigured initramfs, so the guest has its network
    /// at boot, not only its disk.
    public struct NIC: Sendable, Codable, Equatable {
        public var description: String
        /// QEMU arguments that give a guest this adapter.
        public var qemu: [String]
        /// Module names; their dependencies come from the guest's modules.dep.
        public var linuxModules: [String]
    }

    public struct Target: Sendable, Codable, Equatable {
        public var controller: String
        /// The network adapter's name in `nics`, if the target has one.
        public var nic: String?
        /// The disk format the hypervisor opens (`expose --target` writes the plugin in it).
        public var nativeFormat: String?
        /// Linux modules the real hypervisor needs beyond the emulated controller's and adapter's
        /// (`hypervisorModules`): devices the lab's QEMU stand-in cannot emulate, e.g. Hyper-V
        /// generation 2's VMBus (`hv_vmbus`), its synthetic SCSI (`hv_storvsc`) and network
        /// (`hv_netvsc`). A reconfiguration for the target installs them too.
        public var hypervisorModules: [String]?
    }

    public var controllers: [String: Controller]
    /// Optional in the file (older drivers files have no network adapters).
    public var nics: [String: NIC]?
    public var targets: [String: Target]

    public static func load(path: String) throws -> DriverDatabase {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ReconfigureError.drivers("cannot read \(path): \(error.localizedDescription)")
        }
        do { return try JSONDecoder().decode(DriverDatabase.self, from: data) } catch {
            throw ReconfigureError.drivers("\(path): \(error)")
        }
    }

    /// `explicit` (a `--drivers` flag), else `$BOOTLAB_DRIVERS`, else `Scenarios/drivers.json` in
    /// the data roots of `DataFiles` (never the working directory); throws `DataFileError.notFound`
    /// naming every place searched.
    public static func defaultPath(explicit: String? = nil) throws -> String {
        try DataFiles.locate(.drivers, explicit: explicit).path
    }

    /// The controller a target (or a controller name given directly) stands for.
    public func controller(for targetOrController: String) throws -> (name: String, controller: Controller) {
        let name = targets[targetOrController]?.controller ?? targetOrController
        guard let c = controllers[name] else {
            throw ReconfigureError.drivers("unknown target or controller '\(targetOrController)' (targets: \(targets.keys.sorted().joined(separator: ", ")); controllers: \(controllers.keys.sorted().joined(separator: ", ")))")
        }
        return (name, c)
    }
}

extension DriverDatabase {
    /// The network adapter a target names (nil for a controller name or a target without one).
    /// A target naming an adapter the file does not describe is an error, not a silent omission.
    public func nic(for target: String) throws -> (name: String, nic: NIC)? {
        guard let name = targets[target]?.nic else { return nil }
        guard let n = nics?[name] else {
            throw ReconfigureError.drivers("target '\(target)' names network adapter '\(name)', which nics does not describe (known: \((nics ?? [:]).keys.sorted().joined(separator: ", ")))")
        }
        return (name, n)
    }
}

public enum ReconfigureError: Error, CustomStringConvertible, Sendable {
    case drivers(String)
    case noOperatingSystem(String)
    case guest(String)
    case layer(String)
    /// The disk image cannot be read (I/O errors), as opposed to a readable disk without an OS.
    case unreadable(String)

    public var description: String {
        switch self {
        case .drivers(let s): return "drivers: \(s)"
        case .noOperatingSystem(let s): return "no operating system found: \(s)"
        case .guest(let s): return "guest: \(s)"
        case .layer(let s): return "reconfiguration layer: \(s)"
        case .unreadable(let s): return "unreadable disk: \(s)"
        }
    }
}
