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
        return .pass("backup.opens == 0 for \(plugins.count) plugin source(s) after qemu-img info" + (fe.kind == .fuse ? " + stat" : ""), details: details)
    }
}
