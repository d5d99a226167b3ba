import BlockCore
import Foundation

/// The module load list convention of BootLab's tiny Linux: `/etc/bootlab/modules` inside the
/// initramfs lists module paths relative to `/lib/modules/<version>/`, one per line, in load order
/// (`#` starts a comment). Its `/init` runs `insmod` on each. Debian-style initramfs images list
/// module *names* in `/conf/modules` instead (loaded with modprobe); both are handled.
public enum ModuleLoadList {
    public static let bootlabPath = "etc/bootlab/modules"
    public static let initramfsToolsPath = "conf/modules"
}

/// What one file system holds, as far as reconfiguration cares.
struct FilesystemProbe {
    var device: String
    var type: String
    var syslinuxConfig: String?
    var grubConfig: String?
    var moduleVersions: [String] = []
    var hasFstab = false
    var isInitramfsTools = false
}

/// Linux reconfiguration inside one appliance session.
struct LinuxReconfigurer {
    let session: OverlaySession
    let controller: DriverDatabase.Controller
    /// The target's network-adapter modules: added like the controller's when the guest's
    /// kernel has them, skipped (and reported) when it does not.
    var nicModules: [String] = []
    /// Modules the real hypervisor needs although the lab's stand-in does not emulate its
    /// devices (drivers.json `targets.*.hypervisorModules`, e.g. Hyper-V gen2's `hv_vmbus`,
    /// `hv_storvsc`): added like the adapter's when the guest's kernel has them, else reported
    /// as skipped.
    var hypervisorModules: [String] = []
    var g: Guestfs { session.g }

    /// The module names to add for this target: the controller's, then the adapter's that
    /// `deps` lists.
    func wantedModules(_ deps: ModuleDependencies, report: inout ReconfigurationReport) -> [String] {
        var names = controller.linuxModules
        for m in nicModules + hypervisorModules where !names.contains(m) {
            if deps.pathByName[ModuleDependencies.normalize(m)] != nil { names.append(m) }
            else if !report.skippedModules.contains(m) { report.skippedModules.append(m) }
        }
        return names
    }

    /// Inspects and edits the guest; fills `report`. Returns false when it found no Linux.
    func run(report: inout ReconfigurationReport, dryRun: Bool) throws -> Bool {
        let probes = try probe()
        report.filesystems = probes.map { "\($0.device) \($0.type)" }
        if let root = probes.first(where: { $0.isInitramfsTools }) {
            report.os = "linux-initramfs-tools"
            try initramfsTools(root: root, probes: probes, report: &report, dryRun: dryRun)
            return true
        }
        if let boot = probes.first(where: { $0.syslinuxConfig != nil }) {
            report.os = "linux-initramfs"
            _ = try tinyLinux(boot: boot, configPath: boot.syslinuxConfig!, probes: probes, report: &report, dryRun: dryRun)
            return true
        }
        // A GRUB-booted (e.g. UEFI) initramfs that lists its own modules: the same edit. Without
        // such a list it is left to the GRUB step, as before.
        if let boot = probes.first(where: { $0.grubConfig != nil }),
           try tinyLinux(boot: boot, configPath: boot.grubConfig!, probes: probes, report: &report, dryRun: dryRun) {
            report.os = "linux-initramfs"
            return true
        }
        return false
    }

    func probe() throws -> [FilesystemProbe] {
        var out: [FilesystemProbe] = []
        for (dev, type) in try g.listFilesystems() where !["swap", "unknown", ""].contains(type) {
            do { try g.mountReadOnly(dev) } catch { continue }
            defer { try? g.umountAll() }
            var p = FilesystemProbe(device: dev, type: type)
            p.syslinuxConfig = try BootConfig.syslinuxPaths.first { try g.isFile($0) }
            p.grubConfig = try BootConfig.grubPaths.first { try g.isFile($0) }
            for dir in ["/lib/modules", "/usr/lib/modules"] where try g.isDir(dir) {
                p.moduleVersions += try g.ls(dir).filter { try g.isFile("\(dir)/\($0)/modules.dep") }
            }
            p.hasFstab = try g.isFile("/etc/fstab")
            p.isInitramfsTools = try g.isFile("/etc/initramfs-tools/modules") && (try g.exists("/usr/sbin/update-initramfs") || (try g.exists("/sbin/update-initramfs")))
            out.append(p)
        }
        return out
    }

    // MARK: tiny Linux: boot loader config + initramfs holding its own module list

    /// Returns false (having changed nothing) for a GRUB configuration whose initramfs has no
    /// module load list: not an initramfs this step knows how to extend.
    private func tinyLinux(boot: FilesystemProbe, configPath: String, probes: [FilesystemProbe], report: inout ReconfigurationReport, dryRun: Bool) throws -> Bool {
        let isGrub = BootConfig.grubPaths.contains(configPath)
        try g.mountReadOnly(boot.device)
        let configText = String(decoding: try g.readFile(configPath), as: UTF8.self)
        let configDir = (configPath as NSString).deletingLastPathComponent
        var initrdPaths: [String] = []
        for name in isGrub ? BootConfig.grubInitrds(configText) : BootConfig.syslinuxInitrds(configText) {
            // syslinux resolves relative names against the config file's directory.
            let candidates = name.hasPrefix("/") ? [name] : [configDir + "/" + name, "/" + name]
            guard let found = try candidates.first(where: { try g.isFile($0) }) else {
                // GRUB may read it from another file system (a separate /boot): the GRUB step's, as before.
                if isGrub { try g.umountAll(); return false }
                throw ReconfigureError.guest("initrd \(name) named in \(configPath) not found on \(boot.device)")
            }
            initrdPaths.append(found)
        }
        guard !initrdPaths.isEmpty else {
            try g.umountAll()
            if isGrub { return false }
            throw ReconfigureError.guest("\(configPath) names no initrd")
        }
        var images: [(path: String, image: Initramfs)] = []
        for p in initrdPaths {
            let host = session.temporaryPath("initrd-\(images.count)")
            try g.download(p, to: host)
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: host)))
            if isGrub {
                // Not an initramfs we can decode (e.g. another distribution's format): the GRUB step's.
                guard let img = try? Initramfs.decode(bytes) else { try g.umountAll(); return false }
                images.append((p, img))
            } else {
                images.append((p, try Initramfs.decode(bytes)))
            }
        }
        try g.umountAll()
        if isGrub, !images.contains(where: { $0.image.entry(ModuleLoadList.bootlabPath) != nil || $0.image.entry(ModuleLoadList.initramfsToolsPath) != nil }) {
            return false
        }
        report.bootLoader = isGrub ? "grub" : (configPath.contains("extlinux") ? "extlinux" : "syslinux")
        report.bootConfig = "\(boot.device):\(configPath)"
        report.initramfs = initrdPaths.map { "\(boot.device):\($0)" }

        // The kernel version: the module tree inside the initramfs, else the volume's only one.
        let inInitramfs = Set(images.flatMap { img in img.image.entries.compactMap { moduleVersion(of: $0.name) } })
        let volumeVersions = Set(probes.flatMap(\.moduleVersions))
        guard let version = inInitramfs.sorted().first ?? (volumeVersions.count == 1 ? volumeVersions.first : nil) else {
            throw ReconfigureError.guest("cannot tell the kernel version: no lib/modules/<version> in the initramfs and \(volumeVersions.count) on the volumes")
        }
        report.kernelVersion = version

        // modules.dep and module files: from the volume when it has this version's tree (the full
        // set), else from the initramfs itself.
        let moduleFs = probes.first { $0.moduleVersions.contains(version) }
        let modulesDir = "/lib/modules/\(version)"
        var volumeDep: ModuleDependencies?
        if let fs = moduleFs {
            try g.mountReadOnly(fs.device)
            let dir = try g.isDir(modulesDir) ? modulesDir : "/usr/lib/modules/\(version)"
            volumeDep = try ModuleDependencies(text: String(decoding: try g.readFile("\(dir)/modules.dep"), as: UTF8.self))
            try g.umountAll()
        }

        var newImages: [(path: String, bytes: [UInt8])] = []
        var neededFromVolume: [String] = []
        var plans: [(index: Int, image: Initramfs, added: [String])] = []
        for (index, item) in images.enumerated() {
            var img = item.image
            let treePrefix = img.contains("usr/lib/modules/\(version)") && !img.contains("lib/modules/\(version)") ? "usr/lib/modules/\(version)/" : "lib/modules/\(version)/"
            let initramfsDep = img.entry(treePrefix + "modules.dep").map { String(decoding: $0.data, as: UTF8.self) }
            guard let deps = try volumeDep ?? initramfsDep.map({ try ModuleDependencies(text: $0) }) else {
                throw ReconfigureError.guest("no modules.dep for \(version) in \(item.path) or on any volume")
            }
            let order = try deps.loadOrder(for: wantedModules(deps, report: &report))
            let listKind: String
            var list: [String]
            if let e = img.entry(ModuleLoadList.bootlabPath) {
                listKind = ModuleLoadList.bootlabPath
                list = parseList(e.data)
            } else if let e = img.entry(ModuleLoadList.initramfsToolsPath) {
                listKind = ModuleLoadList.initramfsToolsPath
                list = parseList(e.data)
            } else {
                throw ReconfigureError.guest("\(item.path) has neither /\(ModuleLoadList.bootlabPath) nor /\(ModuleLoadList.initramfsToolsPath): cannot tell which modules its init loads")
            }
            let byPath = listKind == ModuleLoadList.bootlabPath
            if index == 0 { report.originalDrivers = list.map { ModuleDependencies.name(ofPath: $0) } }
            var listed = Set(list.map { ModuleDependencies.name(ofPath: $0) })
            var added: [String] = []
            var listAdded: [String] = []
            for path in order {
                if !img.contains(treePrefix + path) {
                    added.append(path)
                }
                let name = ModuleDependencies.name(ofPath: path)
                if !listed.contains(name) {
                    list.append(byPath ? path : name)
                    listed.insert(name)
                    listAdded.append(path)
                }
            }
            if !added.isEmpty {
                if volumeDep == nil {
                    throw ReconfigureError.guest("modules \(added.joined(separator: ", ")) are not in \(item.path) and no volume holds /lib/modules/\(version)")
                }
                neededFromVolume += added
                for p in added {
                    report.changes.append(.init(kind: "initramfs-module", location: "\(boot.device):\(item.path)", detail: treePrefix + p))
                }
                // Keep the initramfs' own modules.dep in step, so modprobe there finds them too.
                if let text = initramfsDep, let vd = volumeDep {
                    let missing = added.filter { !text.contains("\n\($0):") && !text.hasPrefix("\($0):") }
                    if !missing.isEmpty {
                        let newText = (text.hasSuffix("\n") || text.isEmpty ? text : text + "\n") + missing.compactMap { vd.lines[$0] }.map { $0 + "\n" }.joined()
                        img.put(.file(treePrefix + "modules.dep", Array(newText.utf8)))
                        report.changes.append(.init(kind: "modules-dep", location: "\(boot.device):\(item.path)", detail: "/\(treePrefix)modules.dep +\(missing.count) lines"))
                    }
                }
            }
            if !listAdded.isEmpty {
                let old = img.entry(listKind)!
                var e = old
                e.data = Array((list.joined(separator: "\n") + "\n").utf8)
                img.put(e)
                report.changes.append(.init(kind: "module-load-list", location: "\(boot.device):\(item.path)", detail: "/\(listKind) + \(listAdded.map { ModuleDependencies.name(ofPath: $0) }.joined(separator: " "))"))
            }
            if index == 0 { report.addedModules = added }
            if !added.isEmpty || !listAdded.isEmpty { plans.append((index, img, added)) }
        }

        // Fetch the module files from the volume once.
        var fileData: [String: [UInt8]] = [:]
        if !neededFromVolume.isEmpty, let fs = moduleFs {
            try g.mountReadOnly(fs.device)
            let dir = try g.isDir(modulesDir) ? modulesDir : "/usr/lib/modules/\(version)"
            for p in Set(neededFromVolume).sorted() {
                let host = session.temporaryPath("module-\(fileData.count)")
                try g.download("\(dir)/\(p)", to: host)
                fileData[p] = [UInt8](try Data(contentsOf: URL(fileURLWithPath: host)))
            }
            try g.umountAll()
        }
        for plan in plans {
            var img = plan.image
            let treePrefix = img.contains("usr/lib/modules/\(version)") && !img.contains("lib/modules/\(version)") ? "usr/lib/modules/\(version)/" : "lib/modules/\(version)/"
            for p in plan.added { img.put(.file(treePrefix + p, fileData[p]!, mode: 0o644)) }
            newImages.append((images[plan.index].path, try img.encode()))
        }

        // root= on the kernel command line, by UUID.
        var newConfig = configText
        for (token, n) in BootConfig.rootDevices(configText) {
            let uuid = try uuidOfPartition(n)
            newConfig = newConfig.replacingOccurrences(of: token, with: "root=UUID=\(uuid)")
            report.changes.append(.init(kind: "boot-root-uuid", location: "\(boot.device):\(configPath)", detail: "\(token) → root=UUID=\(uuid)"))
        }

        // fstab on every file system that has one.
        var fstabs: [(device: String, text: String)] = []
        for p in probes where p.hasFstab {
            try g.mountReadOnly(p.device)
            let text = String(decoding: try g.readFile("/etc/fstab"), as: UTF8.self)
            try g.umountAll()
            var (newText, rewritten) = try BootConfig.fstabWithUUIDs(text) { try uuidOfPartition($0) }
            if let esp = try espFilesystem() {
                let (t, r) = BootConfig.fstabWithESP(newText, espUUID: esp.uuid, diskUUIDs: esp.all)
                newText = t
                rewritten += r
            }
            if !rewritten.isEmpty {
                fstabs.append((p.device, newText))
                for r in rewritten { report.changes.append(.init(kind: "fstab-uuid", location: "\(p.device):/etc/fstab", detail: r)) }
            }
        }

        guard !dryRun else { return true }
        if !newImages.isEmpty || newConfig != configText {
            try g.mount(boot.device)
            for (path, bytes) in newImages {
                let host = session.temporaryPath("new-initrd")
                try Data(bytes).write(to: URL(fileURLWithPath: host))
                try g.upload(host, to: path)
            }
            if newConfig != configText { try g.writeFile(configPath, Array(newConfig.utf8)) }
            try g.umountAll()
        }
        for (device, text) in fstabs {
            try g.mount(device)
            try g.writeFile("/etc/fstab", Array(text.utf8))
            try g.umountAll()
        }
        return true
    }

    // MARK: Debian/Ubuntu: initramfs-tools inside the guest

    private func initramfsTools(root: FilesystemProbe, probes: [FilesystemProbe], report: inout ReconfigurationReport, dryRun: Bool) throws {
        try g.mountReadOnly(root.device)
        report.bootLoader = root.grubConfig != nil ? "grub" : (root.syslinuxConfig != nil ? "syslinux" : nil)
        report.bootConfig = (root.grubConfig ?? root.syslinuxConfig).map { "\(root.device):\($0)" }
        guard let version = root.moduleVersions.sorted().last else { throw ReconfigureError.guest("no /lib/modules/<version>/modules.dep on \(root.device)") }
        report.kernelVersion = version
        let modulesDir = try g.isDir("/lib/modules/\(version)") ? "/lib/modules/\(version)" : "/usr/lib/modules/\(version)"
        let deps = try ModuleDependencies(text: String(decoding: try g.readFile("\(modulesDir)/modules.dep"), as: UTF8.self))
        let wanted = wantedModules(deps, report: &report)
        let order = try deps.loadOrder(for: wanted)
        let initrd = "/boot/initrd.img-\(version)"
        guard try g.isFile(initrd) else { throw ReconfigureError.guest("\(initrd) not found on \(root.device)") }
        report.initramfs = ["\(root.device):\(initrd)"]
        func modulesIn() throws -> Set<String> {
            let host = session.temporaryPath("initrd")
            try g.download(initrd, to: host)
            let img = try Initramfs.decode([UInt8](try Data(contentsOf: URL(fileURLWithPath: host))))
            return Set(img.entries.compactMap { e -> String? in
                guard let r = e.name.range(of: "/modules/\(version)/") else { return nil }
                let p = String(e.name[r.upperBound...])
                return p.contains(".ko") ? p : nil
            })
        }
        let present = try modulesIn()
        report.originalDrivers = present.filter { p in ["drivers/ata/", "drivers/scsi/", "drivers/block/", "drivers/virtio/", "drivers/nvme/", "drivers/hv/"].contains { p.contains($0) } }
            .map { ModuleDependencies.name(ofPath: $0) }.sorted()
        let missing = order.filter { !present.contains($0) }
        let listText = String(decoding: try g.readFile("/etc/initramfs-tools/modules"), as: UTF8.self)
        let listed = Set(listText.split(separator: "\n").map { $0.split(separator: " ").first.map(String.init) ?? "" }.map(ModuleDependencies.normalize))
        let toList = wanted.filter { !listed.contains(ModuleDependencies.normalize($0)) }
        var rootConfigEdits: [(path: String, old: String, new: String)] = []
        if let cfg = root.grubConfig ?? root.syslinuxConfig {
            let text = String(decoding: try g.readFile(cfg), as: UTF8.self)
            var newText = text
            for (token, n) in BootConfig.rootDevices(text) {
                let uuid = try uuidOfPartition(n)
                newText = newText.replacingOccurrences(of: token, with: "root=UUID=\(uuid)")
                report.changes.append(.init(kind: "boot-root-uuid", location: "\(root.device):\(cfg)", detail: "\(token) → root=UUID=\(uuid)"))
            }
            if newText != text { rootConfigEdits.append((cfg, text, newText)) }
        }
        let fstab = String(decoding: try g.readFile("/etc/fstab"), as: UTF8.self)
        var (newFstab, rewritten) = try BootConfig.fstabWithUUIDs(fstab) { try uuidOfPartition($0) }
        if let esp = try espFilesystem() {
            let (t, r) = BootConfig.fstabWithESP(newFstab, espUUID: esp.uuid, diskUUIDs: esp.all)
            newFstab = t
            rewritten += r
        }
        for r in rewritten { report.changes.append(.init(kind: "fstab-uuid", location: "\(root.device):/etc/fstab", detail: r)) }
        try g.umountAll()

        if !toList.isEmpty && !missing.isEmpty {
            report.changes.append(.init(kind: "initramfs-tools-modules", location: "\(root.device):/etc/initramfs-tools/modules", detail: "+ " + toList.joined(separator: " ")))
        }
        if !missing.isEmpty {
            report.addedModules = missing
            report.changes.append(.init(kind: "update-initramfs", location: "\(root.device):\(initrd)", detail: "update-initramfs -u -k \(version) for " + missing.map { ModuleDependencies.name(ofPath: $0) }.joined(separator: " ")))
        }
        guard !dryRun, !report.changes.isEmpty else { return }
        try g.mount(root.device)
        for e in rootConfigEdits { try g.writeFile(e.path, Array(e.new.utf8)) }
        if !rewritten.isEmpty { try g.writeFile("/etc/fstab", Array(newFstab.utf8)) }
        if !missing.isEmpty {
            if !toList.isEmpty {
                let base = listText.isEmpty || listText.hasSuffix("\n") ? listText : listText + "\n"
                try g.writeFile("/etc/initramfs-tools/modules", Array((base + toList.map { $0 + "\n" }.joined()).utf8))
            }
            _ = try g.command(["update-initramfs", "-u", "-k", version])
            let now = try modulesIn()
            let stillMissing = order.filter { !now.contains($0) }
            guard stillMissing.isEmpty else {
                throw ReconfigureError.guest("update-initramfs ran but \(initrd) still lacks \(stillMissing.joined(separator: ", "))")
            }
        }
        try g.umountAll()
    }

    // MARK: a GRUB-only volume: only /boot/efi

    /// A Linux volume no initramfs step took (`run` returned false: GRUB boots it, but its
    /// initramfs is on another file system, undecodable or without a module list, so the GRUB
    /// step is all that runs): its fstab's `/boot/efi` entry is still kept consistent with the
    /// disk's one FAT file system (the synthesized ESP; docs/uefi.md), as on the initramfs paths.
    /// Only that entry: the other fstab rewrites belong to the steps that also rewrite the boot
    /// configuration. Returns true when it changed (or, dry, would change) an fstab.
    func keepBootEFIEntries(report: inout ReconfigurationReport, dryRun: Bool) throws -> Bool {
        guard let esp = try espFilesystem() else { return false }
        var edited = false
        for p in try probe() where p.hasFstab {
            try g.mountReadOnly(p.device)
            let text = String(decoding: try g.readFile("/etc/fstab"), as: UTF8.self)
            try g.umountAll()
            let (newText, rewritten) = BootConfig.fstabWithESP(text, espUUID: esp.uuid, diskUUIDs: esp.all)
            guard !rewritten.isEmpty else { continue }
            for r in rewritten { report.changes.append(.init(kind: "fstab-uuid", location: "\(p.device):/etc/fstab", detail: r)) }
            edited = true
            guard !dryRun else { continue }
            try g.mount(p.device)
            try g.writeFile("/etc/fstab", Array(newText.utf8))
            try g.umountAll()
        }
        return edited
    }

    // MARK: helpers

    private func parseList(_ data: [UInt8]) -> [String] {
        String(decoding: data, as: UTF8.self).split(separator: "\n")
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }

    private func moduleVersion(of name: String) -> String? {
        for prefix in ["lib/modules/", "usr/lib/modules/"] where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            if let slash = rest.firstIndex(of: "/") { return String(rest[..<slash]) }
        }
        return nil
    }

    /// The UUID of partition `n` of the disk (the appliance sees the disk as /dev/sda).
    /// The disk's one FAT file system (a UEFI disk's ESP, e.g. the one exposure synthesized) and
    /// every file system UUID on the disk; nil when there is no FAT file system or several.
    private func espFilesystem() throws -> (uuid: String, all: Set<String>)? {
        let fss = try g.listFilesystems()
        let fat = fss.filter { $0.type == "vfat" }
        guard fat.count == 1 else { return nil }
        let uuid = try g.vfsUUID(fat[0].device)
        guard !uuid.isEmpty else { return nil }
        var all = Set<String>()
        for fs in fss where !["unknown", ""].contains(fs.type) {
            if let u = try? g.vfsUUID(fs.device), !u.isEmpty { all.insert(u) }
        }
        return (uuid, all)
    }

    private func uuidOfPartition(_ n: Int) throws -> String {
        let dev = "\(session.device)\(n)"
        guard try g.listPartitions().contains(dev) else { throw ReconfigureError.guest("boot configuration names partition \(n), but the disk has no \(dev)") }
        let uuid = try g.vfsUUID(dev)
        guard !uuid.isEmpty else { throw ReconfigureError.guest("\(dev) has no file-system UUID") }
        return uuid
    }
}
