import Foundation
import Processes

/// Reconfigures each exposed machine's OS for the cell's target, between exposure and the mount:
/// `bootlab reconfigure PLUGIN --target T --json` (a child process, like the mount) injects the
/// target's storage drivers into the plugin's reconfiguration layer and re-renders the plugin, so
/// the mounted VHDX is the reconfigured disk. The backup is not touched (its golden digest holds).
///
/// Artefacts: the change list (`reconfiguration-<machine>.txt`, deterministic: what changed, not
/// the bytes), and the layer and plugin marked non-deterministic — the appliance stamps the
/// edited files and the ext4 journal with its clock.
public struct ReconfigureStep: LabStep {
    public let name = "reconfigure"
    /// Bound on one run (an appliance launch under TCG takes 15–25 s on this machine kind; with a
    /// load average of 28 on its 2 cores, runs took more than 600 s: 2026-11-29).
    public static let timeout: Double = 1200
    public init() {}

    public static let changesRole = "reconfiguration"
    public static let layerRole = "reconfiguration-layer"

    public func run(in context: CellContext) throws -> StepOutcome {
        var notes: [String] = []
        var attachments: [String: String] = [:]
        for machine in context.scenario.machines {
            guard let plugin = context.plugins[machine.name] else { return .fail("\(machine.name): no plugin file") }
            let out = context.directory.appendingPathComponent("reconfigure-\(machine.name).json")
            let log = context.directory.appendingPathComponent("reconfigure-\(machine.name).log")
            var args = ["reconfigure", plugin, "--target", context.target.name, "--json",
                        "--drivers", context.suite.directory.appendingPathComponent("drivers.json").path]
            args += try ExposeStep.accessArguments(context) + ExposeStep.faultArguments(context)
            let status = try Self.runChild(args, stdout: out, stderr: log, timeout: Self.timeout)
            attachments["reconfigure-\(machine.name)"] = log.path
            guard status == 0 else {
                let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                return .fail("\(machine.name): bootlab reconfigure exited \(status): \(text.suffix(400))", attachments: attachments)
            }
            let summary = try Summary(json: try Data(contentsOf: out))
            let changesFile = context.directory.appendingPathComponent("reconfiguration-\(machine.name).txt")
            try Data(summary.text.utf8).write(to: changesFile)
            context.put(Artefact(role: Self.changesRole, machine: machine.name, disk: .file(path: changesFile.path, format: "text"),
                                 files: [changesFile.path]))
            context.put(Artefact(role: ArtefactRole.plugin, machine: machine.name, disk: .file(path: plugin, format: try LabDiskFormat.of(context.target).qemuDriver),
                                 files: [plugin], deterministic: false))
            context.put(Artefact(role: Self.layerRole, machine: machine.name, disk: .file(path: summary.layerPath, format: "overlay"),
                                 files: [summary.layerPath, summary.layerPath + ".map"], deterministic: false))
            notes.append("\(machine.name): \(summary.changeCount) changes (\(summary.added.joined(separator: " ")))"
                         + String(format: ", layer %.1f KiB, %.1f s", Double(summary.layerBytes) / 1024, summary.seconds))
        }
        return .pass(notes.joined(separator: "; "), attachments: attachments)
    }

    /// What the step keeps from `bootlab reconfigure --json`.
    struct Summary {
        var text: String
        var changeCount: Int
        var added: [String]
        var layerPath: String
        var layerBytes: UInt64
        var seconds: Double

        init(json: Data) throws {
            guard let top = try JSONSerialization.jsonObject(with: json) as? [String: Any],
                  let report = top["report"] as? [String: Any],
                  let layer = top["layer"] as? [String: Any],
                  let path = layer["layer"] as? String else {
                throw LabError.tool("bootlab reconfigure --json", reason: "gave no report/layer")
            }
            let changes = (report["changes"] as? [[String: Any]]) ?? []
            added = ((report["addedModules"] as? [String]) ?? []).map { URL(fileURLWithPath: $0).deletingPathExtension().lastPathComponent }
            changeCount = changes.count
            layerPath = path
            layerBytes = (layer["layerBytes"] as? NSNumber)?.uint64Value ?? 0
            seconds = (top["seconds"] as? NSNumber)?.doubleValue ?? 0
            var t = "target \(report["target"] ?? "?") controller \(report["controller"] ?? "?") os \(report["os"] ?? "?")\n"
            t += "original drivers: \(((report["originalDrivers"] as? [String]) ?? []).joined(separator: " "))\n"
            if let nic = report["nic"] as? String { t += "network adapter: \(nic)\n" }
            if let skipped = report["skippedModules"] as? [String], !skipped.isEmpty {
                t += "not in the guest's modules.dep: \(skipped.joined(separator: " "))\n"
            }
            for c in changes {
                t += "\(c["kind"] ?? "?") \(c["location"] ?? "?"): \(c["detail"] ?? "")\n"
            }
            text = t
        }
    }

    /// Runs `bootlab ARGS`, bounded by `timeout` seconds (then SIGTERM, and SIGKILL 10 s later:
    /// it may be unmounting or shutting an appliance down); returns the exit status.
    static func runChild(_ args: [String], stdout: URL, stderr: URL, timeout: Double) throws -> Int32 {
        let command = Command([try BootLabExecutable.path()] + args,
                              stdout: .file(stdout.path, append: false), stderr: .file(stderr.path, append: false))
        let r: Completed
        do { r = try command.run(timeout: timeout, grace: 10, check: false) } catch let e as ProcessError { throw LabError.process(e) }
        if r.timedOut {
            throw LabError.tool("bootlab \(args.prefix(2).joined(separator: " "))", reason: "timed out after \(Int(timeout)) s")
        }
        return r.termination.foundationStatus
    }
}
