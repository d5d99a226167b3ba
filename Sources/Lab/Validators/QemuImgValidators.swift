import Foundation

/// `qemu-img check` on every exposed VHDX (through the front-end, as QEMU reads it): exit 0 and
/// "No errors were found".
public struct QemuImgCheckValidator: Validator {
    public let name = "qemu-img-check"
    public init() {}

    public func validate(in context: CellContext) throws -> StepOutcome {
        guard let fe = context.frontEnd else { return .fail("no front-end: the expose step did not run") }
        var notes: [String] = []
        for m in context.scenario.machines {
            let r = try Shell.run("qemu-img", ["check", "--image-opts", fe.imageOptions(machine: m.name)], check: false)
            let text = (r.stdout + r.stderr).trimmingCharacters(in: .whitespacesAndNewlines)
            guard r.status == 0, text.contains("No errors were found") else {
                return .fail("\(m.name): qemu-img check exit \(r.status): \(text.split(separator: "\n").prefix(3).joined(separator: " | "))", details: text)
            }
            notes.append("\(m.name): no errors")
        }
        return .pass(notes.joined(separator: "; "))
    }
}

/// `qemu-img compare` of every exposed disk with the disk it must equal (`ExpectedDisk`): the
/// source disk, or for a relocated volume the independently composed expectation.
public struct CompareValidator: Validator {
    public let name = "qemu-img-compare"
    public init() {}

    public func validate(in context: CellContext) throws -> StepOutcome {
        guard let fe = context.frontEnd else { return .fail("no front-end: the expose step did not run") }
        if context.scenario.reconfigure {
            return .skip("reconfigured: the expected disk is the source plus the reconfiguration layer, defined only by the reconfiguration; libvhdi is held to QEMU's reading instead")
        }
        var notes: [String] = []
        for m in context.scenario.machines {
            let expected = try ExpectedDisk.path(machine: m, in: context)
            let info = try QemuImg.info(imageOptions: fe.imageOptions(machine: m.name))
            let expectedSize = (try FileManager.default.attributesOfItem(atPath: expected)[.size] as? NSNumber)?.uint64Value ?? 0
            guard info.virtualSize == expectedSize else {
                return .fail("\(m.name): exposed virtual size \(info.virtualSize) ≠ expected \(expectedSize) (\(expected))")
            }
            let r = try Shell.run("qemu-img", ["compare", "--image-opts", fe.imageOptions(machine: m.name),
                                               "driver=raw,file.driver=file,file.filename=\(expected.replacingOccurrences(of: ",", with: ",,"))"], check: false)
            let text = (r.stdout + r.stderr).trimmingCharacters(in: .whitespacesAndNewlines)
            switch r.status {
            case 0: notes.append("\(m.name): identical to \(URL(fileURLWithPath: expected).lastPathComponent) (\(expectedSize) bytes)")
            case 1: return .fail("\(m.name): exposed disk differs from \(expected): \(text)", details: text)
            default: return .fail("\(m.name): qemu-img compare could not compare (exit \(r.status)): \(text)", details: text)
            }
        }
        return .pass(notes.joined(separator: "; "))
    }
}
