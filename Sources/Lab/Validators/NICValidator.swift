import Foundation

/// Holds the guest's network adapter to the target's: the init prints every PCI network device
/// (`BOOTLAB-NIC-PCI: <slot> <vendor>:<device> pci-driver=<d|none>`) and every interface's driver
/// (`BOOTLAB-NIC: <if> driver=<d>`) after loading its modules, and this validator reads them from
/// the console log the boot validator wrote.
///
/// What the console must say is computed from the scenario, not read back from the guest: the
/// adapter QEMU was given (the target's `nic.pci_id`) is there, exactly once; and the target's
/// driver (`nic.driver`) is bound to it when the guest should have it — a reconfigured cell
/// whenever the machine's kernel builds that driver (the reconfiguration adds it), an unchanged
/// machine when its initramfs carries it. When the kernel lacks the driver (Debian's cloud kernel
/// has neither tulip nor e1000), the adapter must be there and unbound, and the message says so.
/// Runs only for cells that must boot (a guest that stops before its root exists still prints
/// these lines, but such cells test the storage failure, not the network).
public struct NICValidator: Validator {
    public let machine: String
    public let name: String

    public init(machine: String) {
        self.machine = machine
        name = machine == "main" ? "nic" : "nic:\(machine)"
    }

    /// Whether the guest must have the target adapter's driver bound, and why (for messages).
    static func expectation(context: CellContext, machine spec: SourceMachine, nic: Target.NIC) throws -> (bound: Bool, why: String) {
        let kernel = try LabCache.kernel(spec.kernel)
        let resolver = try ModuleResolver(kernel: kernel)
        if resolver.resolve([nic.driver]).absent.contains(nic.driver) {
            return (false, "the \(spec.kernel.rawValue) kernel (\(kernel.release)) has no \(nic.driver) driver")
        }
        if context.scenario.reconfigure {
            return (true, "reconfigured for \(context.target.name), whose adapter needs \(nic.driver)")
        }
        let carried = context.generated[spec.name].map { g in
            g.modules.builtin.contains(nic.driver) || g.modules.files.contains { ModuleResolver.name(of: $0) == ModuleResolver.name(of: nic.driver) }
        } ?? false
        return carried ? (true, "the initramfs carries \(nic.driver)")
                       : (false, "the initramfs does not carry \(nic.driver) and the cell does not reconfigure")
    }

    public func validate(in context: CellContext) throws -> StepOutcome {
        guard let nic = context.target.nic else { return .fail("target \(context.target.name) names no network adapter") }
        guard let spec = context.scenario.machines.first(where: { $0.name == machine }) else {
            return .fail("scenario has no machine \(machine)")
        }
        let log = context.directory.appendingPathComponent("console-\(machine).log")
        guard let console = try? String(contentsOf: log, encoding: .utf8) else {
            return .fail("no console log \(log.lastPathComponent): the boot validator did not run")
        }
        let attachments = ["console": log.path]
        let result = Self.check(console: console, nic: nic, expectation: try Self.expectation(context: context, machine: spec, nic: nic))
        return StepOutcome(result.pass ? .pass : .fail, result.message, attachments: attachments)
    }

    /// The decision on a console's text, separate from the cell so tests can feed it lines.
    static func check(console: String, nic: Target.NIC, expectation: (bound: Bool, why: String)) -> (pass: Bool, message: String) {
        let lines = console.split(whereSeparator: \.isNewline).map { String($0).trimmingCharacters(in: .whitespaces) }
        func fields(_ prefix: String) -> [[String]] {
            let p = prefix.trimmingCharacters(in: .whitespaces)
            return lines.compactMap { line -> [String]? in
                guard let r = line.range(of: p) else { return nil }
                return line[r.upperBound...].split(separator: " ").map(String.init)
            }
        }
        let pci = fields(Initramfs.nicPCIPrefix).filter { $0.count == 3 }
        let interfaces = fields(Initramfs.nicPrefix).filter { $0.count == 2 }
        let seen = pci.map { "\($0[1]) (\($0[2]))" }.joined(separator: ", ")
        guard !pci.isEmpty else {
            return (false, "the guest reported no PCI network adapter (no \(Initramfs.nicPCIPrefix.trimmingCharacters(in: .whitespaces)) line); QEMU should have given it \(nic.model) \(nic.pciID)")
        }
        let matching = pci.filter { $0[1] == nic.pciID }
        guard matching.count == 1, pci.count == 1 else {
            return (false, "expected one network adapter \(nic.pciID) (\(nic.model)), the guest saw: \(seen)")
        }
        let drivers = interfaces.map { $0[1].replacingOccurrences(of: "driver=", with: "") }
        let bound = drivers.contains(nic.driver)
        switch (expectation.bound, bound) {
        case (true, true):
            let iface = interfaces.first { $0[1] == "driver=\(nic.driver)" }![0]
            return (true, "\(iface) driven by \(nic.driver) on \(nic.model) \(nic.pciID) (\(expectation.why))")
        case (true, false):
            return (false, "\(nic.driver) did not bind to \(nic.model) \(nic.pciID), though \(expectation.why): adapter \(seen), interfaces: \(drivers.isEmpty ? "none" : drivers.joined(separator: " "))")
        case (false, false):
            return (true, "adapter \(nic.pciID) (\(nic.model)) present and unbound, as expected: \(expectation.why)")
        case (false, true):
            return (false, "\(nic.driver) bound, but \(expectation.why): the expectation is wrong or the guest is not the one generated")
        }
    }
}
