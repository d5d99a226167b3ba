import Foundation
import Reconfigure

/// Holds a reconfiguration for a hypervisor the lab only stands in for (Hyper-V gen2: QEMU boots
/// it from virtio-scsi, it cannot emulate VMBus) to what the real one needs: every module of the
/// target's `hypervisorModules` (drivers.json; `hv_vmbus`, `hv_storvsc`, `hv_netvsc`) must be in
/// the reconfigured disk's initramfs, and listed in its module load list so its init loads it.
///
/// It reads the disk, not the engine's word: the reconfiguration report only says *where* the
/// initramfs is (`initramfs`: `/dev/sdaN:/boot/initrd.img`); the validator converts the mounted
/// (reconfigured) exposed disk to raw with qemu-img, copies that file out with the file system's
/// own tools (debugfs / mtools) at the exposed partition start, and decodes it with our cpio
/// reader. The boot cannot catch a missing module: no emulated device needs it.
public struct HypervisorModulesValidator: Validator {
    public let name = "hypervisor-modules"

    public init() {}

    public func validate(in context: CellContext) throws -> StepOutcome {
        // The target's `hypervisorModules` in the suite's drivers.json (what the engine read).
        let modules = context.suite.hypervisorModules(for: [context.target.name])
        guard !modules.isEmpty else {
            return .pass("\(context.target.name) needs no modules beyond its emulated devices' (no hypervisorModules in drivers.json)")
        }
        guard let fe = context.frontEnd else { return .fail("no front-end: the expose step did not run") }
        var notes: [String] = []
        for m in context.scenario.machines {
            let reportURL = context.directory.appendingPathComponent("reconfigure-\(m.name).json")
            guard let data = try? Data(contentsOf: reportURL),
                  let top = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let report = top["report"] as? [String: Any] else {
                return .fail("\(m.name): no reconfiguration report \(reportURL.lastPathComponent): the reconfigure step did not run")
            }
            guard let location = (report["initramfs"] as? [String])?.first,
                  let colon = location.firstIndex(of: ":") else {
                return .fail("\(m.name): the reconfiguration report names no initramfs (os \(report["os"] ?? "?")): nothing could have installed \(modules.joined(separator: ", "))")
            }
            let path = String(location[location.index(after: colon)...])
            let raw = context.directory.appendingPathComponent("reconfigured-\(m.name).raw").path
            try QemuImg.convertToRaw(imageOptions: fe.imageOptions(machine: m.name), output: raw)
            defer { try? FileManager.default.removeItem(atPath: raw) }
            let start = context.scenario.backup.kind == .disk ? m.partitionStart : (context.scenario.backup.exposePartitionStart ?? m.partitionStart)
            let local = context.directory.appendingPathComponent("reconfigured-initrd-\(m.name)").path
            try ChangedFilesValidator().extract(m, image: raw, offset: start * 512, path: path, to: local)
            guard let bytes = try? Data(contentsOf: URL(fileURLWithPath: local)) else {
                return .fail("\(m.name): \(path) (named by the reconfiguration report) is not on the reconfigured disk at LBA \(start)")
            }
            let image: Reconfigure.Initramfs
            do { image = try Reconfigure.Initramfs.decode([UInt8](bytes)) } catch {
                return .fail("\(m.name): \(path) on the reconfigured disk is not a readable initramfs: \(error)")
            }
            let missing = Self.missing(modules, in: image)
            guard missing.isEmpty else {
                return .fail("\(m.name): the reconfigured initramfs \(path) lacks what real \(context.target.name) needs: \(missing.joined(separator: "; "))",
                             attachments: ["initramfs": local])
            }
            notes.append("\(m.name): \(path) carries and loads \(modules.joined(separator: " "))")
        }
        return .pass(notes.joined(separator: "; "))
    }

    /// Each wanted module missing from `image`, with why: no `.ko` file under
    /// `lib/modules/<version>/`, or not in the init's load list (`etc/bootlab/modules` by path,
    /// `conf/modules` by name). Names compare with `-` and `_` alike, as the kernel does.
    ///
    /// An image that runs udev (initramfs-tools' `scripts/init-top/udev` with `systemd-udevd`,
    /// e.g. a Debian install's `MODULES=most` image) loads drivers by modalias, not from a list:
    /// there a module also counts as loaded when the image's `modules.alias` maps a device alias
    /// to it (`hv_vmbus`: `acpi*:VMBUS:*`, `hv_storvsc`/`hv_netvsc`: `vmbus:…` class GUIDs) —
    /// what udev matches the device Hyper-V presents against.
    public static func missing(_ wanted: [String], in image: Reconfigure.Initramfs) -> [String] {
        func norm(_ s: String) -> String { s.replacingOccurrences(of: "-", with: "_") }
        func moduleName(_ path: String) -> String {
            var base = String(path.split(separator: "/").last ?? "")
            for ext in [".xz", ".zst", ".gz"] where base.hasSuffix(ext) { base.removeLast(ext.count) }
            if base.hasSuffix(".ko") { base.removeLast(3) }
            return norm(base)
        }
        let files = Set(image.entries.filter { $0.isRegularFile && $0.name.contains("/modules/") && $0.name.contains(".ko") }.map { moduleName($0.name) })
        let listEntry = image.entry(ModuleLoadList.bootlabPath) ?? image.entry(ModuleLoadList.initramfsToolsPath)
        let listed = Set((listEntry.map { String(decoding: $0.data, as: UTF8.self) } ?? "")
            .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
            .map { moduleName(String($0.split(separator: " ").first ?? "")) })
        // Debian 12's systemd-udevd is a symlink to udevadm: any entry of that name counts.
        let udev = image.entries.contains { $0.name.hasSuffix("/systemd-udevd") || $0.name.hasSuffix("sbin/udevd") }
            && image.entries.contains { $0.name == "scripts/init-top/udev" }
        var aliased = Set<String>()
        if udev, let aliases = image.entries.first(where: { $0.isRegularFile && $0.name.contains("/modules/") && $0.name.hasSuffix("/modules.alias") }) {
            for line in String(decoding: aliases.data, as: UTF8.self).split(separator: "\n") {
                let f = line.split(separator: " ")
                if f.count == 3, f[0] == "alias" { aliased.insert(norm(String(f[2]))) }
            }
        }
        var out: [String] = []
        for w in wanted {
            let n = norm(w)
            if !files.contains(n) { out.append("\(w) (no \(w).ko in the initramfs)") }
            else if aliased.contains(n) && !listed.contains(n) { continue }
            else if listEntry == nil { out.append("\(w) (the initramfs has no /\(ModuleLoadList.bootlabPath) or /\(ModuleLoadList.initramfsToolsPath) load list)") }
            else if !listed.contains(n) { out.append("\(w) (its .ko is there, but the load list does not name it)") }
        }
        return out
    }
}
