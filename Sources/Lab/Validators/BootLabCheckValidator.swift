import Foundation

/// Our own checker: `bootlab check` on every exposed VHDX must exit 0 (clean).
public struct BootLabCheckValidator: Validator {
    public let name = "bootlab-check"
    public init() {}

    public func validate(in context: CellContext) throws -> StepOutcome {
        guard let fe = context.frontEnd else { return .fail("no front-end: the expose step did not run") }
        let exe = try BootLabExecutable.path()
        var notes: [String] = []
        for m in context.scenario.machines {
            let file = try fe.localFile(machine: m.name)
            let r = try Shell.run(exe, ["check", file], check: false)
            let text = (r.stdout + r.stderr).trimmingCharacters(in: .whitespacesAndNewlines)
            guard r.status == 0 else {
                return .fail("\(m.name): bootlab check exit \(r.status): \(text.split(separator: "\n").prefix(3).joined(separator: " | "))", details: text)
            }
            notes.append("\(m.name): clean")
        }
        return .pass(notes.joined(separator: "; "))
    }
}
