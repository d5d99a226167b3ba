import BlockCore
import Foundation

/// Windows reconfiguration inside one appliance session: the SYSTEM hive (boot-start storage
/// driver, CriticalDeviceDatabase, MountedDevices), the BCD store's device elements, and the
/// NTFS boot sector's hidden-sectors field, all for the disk as the engine sees it (its MBR
/// signature and the partition's offset).
struct WindowsReconfigurer {
    let session: OverlaySession
    let controller: DriverDatabase.Controller
    var g: Guestfs { session.g }

    /// BCD elements that hold a device (BcdLibraryDevice_ApplicationDevice, BcdOSLoaderDevice_OSDevice).
    static let deviceElements = ["11000001", "21000001"]
    /// Offsets in an MBR partition device element, as Windows writes them: device type at 0x10
    /// (6 = partition), partition byte offset at 0x20 (u64), partition style at 0x38 (1 = MBR),
    /// disk signature at 0x3C.
    static let elementType = 0x10, elementOffset = 0x20, elementStyle = 0x38, elementSignature = 0x3C

    func run(report: inout ReconfigurationReport, dryRun: Bool) throws -> Bool {
        var system: (device: String, path: String)?
        var bcd: (device: String, path: String)?
        for (dev, type) in try g.listFilesystems() where type == "ntfs" {
            try g.mountReadOnly(dev)
            if system == nil, let p = try? g.caseSensitivePath("/Windows/System32/config/SYSTEM"), try g.isFile(p) { system = (dev, p) }
            if bcd == nil, let p = try? g.caseSensitivePath("/Boot/BCD"), try g.isFile(p) { bcd = (dev, p) }
            try g.umountAll()
        }
        guard let system else { return false }
        report.os = "windows"
        report.filesystems = try g.listFilesystems().map { "\($0.device) \($0.type)" }

        // The disk as it is now: MBR signature and this partition's start.
        let mbr = try g.preadDevice(session.device, count: 512, at: 0)
        guard mbr[510] == 0x55, mbr[511] == 0xAA else { throw ReconfigureError.guest("\(session.device) has no MBR (55AA missing); GPT disks are not handled") }
        let signature = mbr.le32(0x1B8)
        guard let partNo = Int(system.device.dropFirst(session.device.count)), (1...4).contains(partNo) else {
            throw ReconfigureError.guest("\(system.device) is not a primary MBR partition")
        }
        let startLBA = mbr.le32(0x1BE + (partNo - 1) * 16 + 8)
        let partitionOffset = UInt64(startLBA) * 512
        let mountedValue = RegistryType.dword(signature) + (0..<8).map { UInt8((partitionOffset >> (8 * UInt64($0))) & 0xFF) }

        // SYSTEM hive: edit a downloaded copy with hivex, upload it if anything changed.
        try g.mountReadOnly(system.device)
        let hivePath = session.temporaryPath("SYSTEM")
        try g.download(system.path, to: hivePath)
        var bcdPath: String?
        if let bcd, bcd.device == system.device {
            bcdPath = session.temporaryPath("BCD")
            try g.download(bcd.path, to: bcdPath!)
        }
        try g.umountAll()
        let hive = try Hive(path: hivePath)
        let loc = "\(system.device):\(system.path)"
        var hiveChanged = false
        let current = hive.node("Select").flatMap { hive.value($0, "Current") }.map { $0.data.le32(0) } ?? 1
        let cs = String(format: "ControlSet%03u", current)
        if let services = hive.node("\(cs)\\Services") {
            report.originalDrivers = hive.children(services).filter { s in
                hive.value(s.node, "Start").map { $0.data.count >= 4 && $0.data.le32(0) == 0 } ?? false
            }.map(\.name).sorted()
        }
        for svc in controller.windows.services {
            let n = try hive.ensureNode("\(cs)\\Services\\\(svc.name)")
            var edits: [String] = []
            if try hive.set(n, "Start", type: RegistryType.dword, RegistryType.dword(0)) { edits.append("Start=0") }
            if try hive.set(n, "Type", type: RegistryType.dword, RegistryType.dword(1)) { edits.append("Type=1") }
            if try hive.set(n, "ErrorControl", type: RegistryType.dword, RegistryType.dword(1)) { edits.append("ErrorControl=1") }
            if try hive.set(n, "Group", type: RegistryType.sz, RegistryType.string(svc.group)) { edits.append("Group=\(svc.group)") }
            if try hive.set(n, "ImagePath", type: RegistryType.expandSz, RegistryType.string(svc.imagePath)) { edits.append("ImagePath=\(svc.imagePath)") }
            if let tag = svc.tag, try hive.set(n, "Tag", type: RegistryType.dword, RegistryType.dword(tag)) { edits.append("Tag=\(tag)") }
            if !edits.isEmpty {
                hiveChanged = true
                report.changes.append(.init(kind: "windows-service", location: loc, detail: "\(cs)\\Services\\\(svc.name): " + edits.joined(separator: " ")))
            }
        }
        for dev in controller.windows.criticalDevices {
            let n = try hive.ensureNode("\(cs)\\Control\\CriticalDeviceDatabase\\\(dev.id)")
            let a = try hive.set(n, "Service", type: RegistryType.sz, RegistryType.string(dev.service))
            let b = try hive.set(n, "ClassGUID", type: RegistryType.sz, RegistryType.string(dev.classGUID))
            if a || b {
                hiveChanged = true
                report.changes.append(.init(kind: "windows-critical-device", location: loc, detail: "\(dev.id) → \(dev.service)"))
            }
        }
        let md = try hive.ensureNode("MountedDevices")
        let oldC = hive.value(md, "\\DosDevices\\C:")?.data
        for name in hive.valueNames(md) where name.hasPrefix("\\??\\Volume{") {
            if let v = hive.value(md, name), v.data.count == 12, v.data == oldC, try hive.set(md, name, type: RegistryType.binary, mountedValue) {
                hiveChanged = true
                report.changes.append(.init(kind: "windows-mounted-devices", location: loc, detail: "\(name) → signature \(hex32(signature)) offset \(partitionOffset)"))
            }
        }
        if try hive.set(md, "\\DosDevices\\C:", type: RegistryType.binary, mountedValue) {
            hiveChanged = true
            report.changes.append(.init(kind: "windows-mounted-devices", location: loc, detail: "\\DosDevices\\C: → signature \(hex32(signature)) offset \(partitionOffset)"))
        }
        if hiveChanged { try hive.commit() }

        // BCD: every MBR partition device element points at this disk and partition.
        var bcdChanged = false
        if let bcdPath, let bcd {
            let store = try Hive(path: bcdPath)
            if let objects = store.node("Objects") {
                for obj in store.children(objects) {
                    for el in Self.deviceElements {
                        guard let e = store.node("Objects\\\(obj.name)\\Elements\\\(el)"), var v = store.value(e, "Element")?.data,
                              v.count >= Self.elementSignature + 4, v.le32(Self.elementType) == 6, v.le32(Self.elementStyle) == 1 else { continue }
                        v.putLE64(partitionOffset, at: Self.elementOffset)
                        v.putLE32(signature, at: Self.elementSignature)
                        if try store.set(e, "Element", type: RegistryType.binary, v) {
                            bcdChanged = true
                            report.changes.append(.init(kind: "bcd-device", location: "\(bcd.device):\(bcd.path)", detail: "\(obj.name)\\\(el) → signature \(hex32(signature)) offset \(partitionOffset)"))
                        }
                    }
                }
            }
            if bcdChanged { try store.commit() }
        }

        // NTFS boot sector (and its backup at the volume's last sector): hidden sectors = start LBA.
        var sectorPatches: [(UInt64, [UInt8])] = []
        let boot = try g.preadDevice(system.device, count: 512, at: 0)
        if Array(boot[3..<11]) == Array("NTFS    ".utf8), boot.le32(0x1C) != startLBA {
            var b = boot
            b.putLE32(startLBA, at: 0x1C)
            sectorPatches.append((0, b))
            report.changes.append(.init(kind: "ntfs-hidden-sectors", location: system.device, detail: "\(boot.le32(0x1C)) → \(startLBA)"))
            let total = boot.le64(0x28)
            let bytesPerSector = UInt64(boot[0x0B]) | UInt64(boot[0x0C]) << 8
            if bytesPerSector == 512, total > 0, let backup = try? g.preadDevice(system.device, count: 512, at: total * 512),
               Array(backup[3..<11]) == Array("NTFS    ".utf8) {
                var bb = backup
                bb.putLE32(startLBA, at: 0x1C)
                sectorPatches.append((total * 512, bb))
            }
        }

        guard !dryRun else { return true }
        if hiveChanged || bcdChanged {
            try g.mount(system.device)
            if hiveChanged { try g.upload(hivePath, to: system.path) }
            if bcdChanged, let bcdPath, let bcd { try g.upload(bcdPath, to: bcd.path) }
            try g.umountAll()
        }
        for (off, bytes) in sectorPatches { try g.pwriteDevice(system.device, bytes, at: off) }
        return true
    }

    private func hex32(_ v: UInt32) -> String { String(format: "0x%08X", v) }
}
