import BlockCore
import Exposure
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
            // QEMU's vpc (VHD) driver has no check: it says so with exit 63. Not a pass of ours
            // to claim — the note says which validators check VHD structures instead.
            if fe.format.qemuDriver == "vpc", r.status == 63, text.contains("does not support checks") {
                notes.append("\(m.name): QEMU's vpc driver has no check (exit 63); VHD structures are checked by bootlab-check and read by libvhdi")
                continue
            }
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
        if context.scenario.reconfigure { return try compareOutsideLayer(context, fe) }
        var notes: [String] = []
        for m in context.scenario.machines {
            if m.isUEFI && context.scenario.backup.esp == .synthesize {
                notes.append("\(m.name): compared by gpt-esp outside the synthesized ESP and the GPT structures")
                continue
            }
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

    /// A reconfigured disk: QEMU's reading of it must equal the source expectation everywhere
    /// except the ranges the reconfiguration layer records, and those ranges must lie inside the
    /// OS volume (the reconfiguration edits files of the guest's file system, nothing else). The
    /// expectation is built from the scenario, never from the disk under test.
    static func layerRanges(pluginPath: String, layerPath: String, pointer: PluginPointer, identity: [UInt8]) throws -> [Range<UInt64>] {
        let layer = try WriteOverlay(base: ZeroSource(size: pointer.composition.diskSize), path: layerPath,
                                     unitSize: ReconfigurationLayer.unitSize, baseIdentity: identity, readOnly: true)
        return layer.writtenRanges
    }

    /// The byte ranges a cell's reconfiguration layer holds for machine `m` (empty when the cell
    /// does not reconfigure).
    static func layerRanges(machine m: SourceMachine, in context: CellContext) throws -> [Range<UInt64>] {
        guard context.scenario.reconfigure, let plugin = context.plugins[m.name],
              let layerPath = context.artefacts.first(where: { $0.machine == m.name && $0.role == ReconfigureStep.layerRole })?.files.first else { return [] }
        let (pointer, _) = try PluginPointer.read(pluginPath: plugin)
        guard let digest = [UInt8](hex: pointer.backupHeaderDigest) else { throw LabError.cell(m.name, reason: "the pointer's header digest is not hex") }
        let identity = try ReconfigurationLayer.identity(backupHeaderDigest: digest, composition: pointer.composition)
        return try layerRanges(pluginPath: plugin, layerPath: layerPath, pointer: pointer, identity: identity)
    }

    func compareOutsideLayer(_ context: CellContext, _ fe: FrontEndProcess) throws -> StepOutcome {
        var notes: [String] = []
        for m in context.scenario.machines {
            let served = try ExpectedDisk.path(machine: m, in: context)  // QEMU's read of the exposed disk
            let source = try ExpectedDisk.sourceExpectation(machine: m, in: context)
            guard let plugin = context.plugins[m.name] else { return .fail("\(m.name): no plugin file") }
            guard let layerPath = context.artefacts.first(where: { $0.machine == m.name && $0.role == ReconfigureStep.layerRole })?.files.first else {
                return .fail("\(m.name): reconfigured, but the reconfigure step left no layer")
            }
            let (pointer, _) = try PluginPointer.read(pluginPath: plugin)
            guard let digest = [UInt8](hex: pointer.backupHeaderDigest) else { return .fail("\(m.name): the pointer's header digest is not hex") }
            let identity = try ReconfigurationLayer.identity(backupHeaderDigest: digest, composition: pointer.composition)
            let ranges = try Self.layerRanges(pluginPath: plugin, layerPath: layerPath, pointer: pointer, identity: identity)
            let a = try RawFile(path: served), b = try RawFile(path: source)
            guard a.size == b.size else { return .fail("\(m.name): exposed virtual size \(a.size) ≠ expected \(b.size) (\(source))") }
            let newStart = context.scenario.backup.exposePartitionStart ?? m.partitionStart
            let ss = UInt64(m.sectorSize)
            let volume = newStart * ss..<(newStart * ss + m.volumeSize)
            // GRUB's boot code (boot.img in sector 0's first 440 bytes, core.img after it) lives
            // before the partition: allowed there only when the change list says it was written.
            let changes = context.artefacts.first { $0.machine == m.name && $0.role == ReconfigureStep.changesRole }?.files.first
                .flatMap { try? String(contentsOfFile: $0, encoding: .utf8) } ?? ""
            let bootCode: Range<UInt64> = changes.split(separator: "\n").contains { $0.hasPrefix("grub-boot-code ") } ? 0..<volume.lowerBound : 0..<0
            if let outside = ranges.first(where: { !(($0.lowerBound >= volume.lowerBound && $0.upperBound <= volume.upperBound)
                                                     || ($0.lowerBound >= bootCode.lowerBound && $0.upperBound <= bootCode.upperBound)) }) {
                return .fail("\(m.name): the reconfiguration layer holds \(outside), outside the OS volume \(volume)\(bootCode.isEmpty ? "" : " and the boot code before it")")
            }
            // Compare the complement of the layer's ranges, 1 MiB at a time. A UEFI volume exposed
            // with a synthesized ESP: only the OS volume here (the GPT and the ESP have no
            // independent bytes; gpt-esp judges them and the rest, outside these same ranges).
            let compared: Range<UInt64> = m.isUEFI && context.scenario.backup.kind == .volumeOnly ? volume : 0..<a.size
            var gaps: [Range<UInt64>] = []
            var pos: UInt64 = compared.lowerBound
            for r in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
                if r.lowerBound > pos { gaps.append(pos..<min(r.lowerBound, compared.upperBound)) }
                pos = max(pos, r.upperBound)
            }
            if pos < compared.upperBound { gaps.append(pos..<compared.upperBound) }
            gaps.removeAll { $0.isEmpty }
            var changedUnits = 0
            for gap in gaps {
                var at = gap.lowerBound
                while at < gap.upperBound {
                    let n = Int(min(1 << 20, gap.upperBound - at))
                    let x = try a.read(at: at, count: n), y = try b.read(at: at, count: n)
                    if x != y {
                        let i = x.indices.first { x[$0] != y[$0] } ?? 0
                        return .fail("\(m.name): outside the reconfiguration layer's ranges the exposed disk differs from \(URL(fileURLWithPath: source).lastPathComponent) at byte \(at + UInt64(i))")
                    }
                    at += UInt64(n)
                }
            }
            for r in ranges where try a.read(at: r.lowerBound, count: Int(r.count)) != b.read(at: r.lowerBound, count: Int(r.count)) { changedUnits += 1 }
            notes.append("\(m.name): equal to \(URL(fileURLWithPath: source).lastPathComponent) outside \(ranges.count) layer ranges (\(changedUnits) of them changed), all inside the OS volume\(bootCode.isEmpty ? "" : " or GRUB's boot code before it")")
        }
        return .pass(notes.joined(separator: "; "))
    }
}
