import BlockCore
import Foundation

/// Metadata-only access must not open the backup: after `qemu-img info` and (FUSE) `stat` on
/// every exposed disk, the front-end's counters (written on SIGUSR1) must show `backup.opens == 0`
/// for every plugin source. Must run before anything reads payload.
public struct DeferredOpenValidator: Validator {
    public let name = "deferred-open"
    public init() {}

    public func validate(in context: CellContext) throws -> StepOutcome {
        guard let fe = context.frontEnd else { return .fail("no front-end: the expose step did not run") }
        var touched: [String] = []
        for m in context.scenario.machines {
            if fe.format.metadataOnlyAtEnd {
                // QEMU reads sector 0 of a fixed VHD (the disk's own bytes) looking for a footer
                // copy: not a metadata-only access. Read what Hyper-V and Azure read instead.
                // The file's bytes as raw (QEMU's raw driver probes nothing): size, then the footer.
                let raw = fe.rawFileOptions(machine: m.name)
                let size = try QemuImg.info(imageOptions: raw).virtualSize
                let r = try Shell.run("qemu-io", ["-r", "--image-opts", raw, "-c", "read -v \(size - 512) 8"], check: false)
                guard r.status == 0, r.stdout.contains("conectix") else {
                    return .fail("\(m.name): the fixed VHD's last 512 bytes are not a footer (no 'conectix' cookie)")
                }
                touched.append("\(m.name): stat size \(size), footer read (fixed VHD: qemu-img info would read sector 0, the disk itself)")
                continue
            }
            let info = try QemuImg.info(imageOptions: fe.imageOptions(machine: m.name))
            if fe.kind == .fuse {
                let attrs = try FileManager.default.attributesOfItem(atPath: fe.exposedPath(machine: m.name))
                touched.append("\(m.name): stat size \((attrs[.size] as? NSNumber)?.uint64Value ?? 0), qemu-img info \(info.format) \(info.virtualSize)")
            } else {
                touched.append("\(m.name): qemu-img info \(info.format) \(info.virtualSize) over NBD")
            }
        }
        let stats = try fe.statistics()
        let plugins = stats.filter { $0.backup != nil }
        guard plugins.count >= context.scenario.machines.count else {
            return .fail("the front-end reports \(plugins.count) plugin sources for \(context.scenario.machines.count) machines",
                         details: "\(stats)")
        }
        let opened = plugins.filter { ($0.backup?.opens ?? 0) != 0 }
        let details = touched.joined(separator: "\n") + "\n" + plugins.map { "\($0.name): backup opens \($0.backup?.opens ?? 0), bytes \($0.backup?.bytesRead ?? 0), file reads \($0.reads)" }.joined(separator: "\n")
        if !opened.isEmpty {
            return .fail("backup opened by metadata-only access: " + opened.map { "\($0.name) opens=\($0.backup!.opens)" }.joined(separator: ", "), details: details)
        }
        let access = fe.format.metadataOnlyAtEnd ? "stat + the footer read" : "qemu-img info" + (fe.kind == .fuse ? " + stat" : "")
        return .pass("backup.opens == 0 for \(plugins.count) plugin source(s) after \(access)", details: details)
    }
}
