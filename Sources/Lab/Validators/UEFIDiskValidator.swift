import BlockCore
import Foundation

/// The GPT and EFI System Partition of a UEFI machine's exposed disk, judged by tools BootLab did
/// not write (docs/uefi.md): the exposed disk as QEMU reads it, converted to raw, then
/// - `sgdisk -v` must say "No problems found" (its text, not only its status);
/// - `sgdisk -p`/`-i`: the root partition keeps its number, first sector, unique GUID and name, the
///   disk its GUID (the lab's own seed-derived values);
/// - an ESP (type EF00) is present when the disk must boot under UEFI (whole disk, or a volume
///   exposed with `esp: synthesize`), absent otherwise (the must-not-boot twin);
/// - each ESP: `fsck.fat -n` finds it clean (judged by its text), mtools reads
///   `\EFI\BOOT\BOOTX64.EFI` from it, a PE image (`MZ`); for a synthesized ESP the loader's
///   embedded config names the root file system's UUID.
public struct UEFIDiskValidator: Validator {
    public let name = "gpt-esp"
    public init() {}

    public func validate(in context: CellContext) throws -> StepOutcome {
        guard let fe = context.frontEnd else { return .fail("no front-end: the expose step did not run") }
        var notes: [String] = []
        for m in context.scenario.machines where m.isUEFI {
            let raw = context.directory.appendingPathComponent("uefi-read-\(m.name).raw").path
            try QemuImg.convertToRaw(imageOptions: fe.imageOptions(machine: m.name), output: raw)
            defer { try? FileManager.default.removeItem(atPath: raw) }

            // LBAs count the machine's sectors: a 4Kn disk is read through a loop device with
            // 4096-byte blocks (sgdisk assumes 512 on a plain file; docs/uefi.md, "4 KiB sectors").
            let ss = UInt64(m.sectorSize)
            func sgdisk(_ args: [String], check: Bool = true) throws -> Shell.Output {
                try GPTImage.withDevice(raw, sectorSize: m.sectorSize) { try Shell.run("sgdisk", args + [$0], check: check) }
            }
            let verify = try sgdisk(["-v"], check: false)
            let vtext = verify.stdout + verify.stderr
            guard verify.status == 0, vtext.contains("No problems found") else {
                return .fail("\(m.name): sgdisk -v finds problems: \(vtext.trimmingCharacters(in: .whitespacesAndNewlines))", details: vtext)
            }
            let ids = DiskGenerator.uefiGUIDs(m, seed: context.scenario.seed)
            let table = try sgdisk(["-p"]).stdout
            guard table.localizedCaseInsensitiveContains("Disk identifier (GUID): \(ids.disk)") else {
                return .fail("\(m.name): disk GUID is not the source's \(ids.disk): \(table)", details: table)
            }
            let root = try sgdisk(["-i", "2"]).stdout
            // Where exposure put the root (its original start unless the scenario moves it).
            let rootStart = context.scenario.backup.kind == .volumeOnly ? (context.scenario.backup.exposePartitionStart ?? m.partitionStart) : m.partitionStart
            let rootEnd = rootStart + m.volumeSize / ss - 1
            for (what, want) in [("unique GUID", "Partition unique GUID: \(ids.root)"), ("first sector", "First sector: \(rootStart) "),
                                 ("last sector", "Last sector: \(rootEnd) "), ("name", "Partition name: 'bootlab root'"),
                                 ("type", "Partition GUID code: 0FC63DAF-8483-4772-8E79-3D69D8477DE4")]
            where !root.localizedCaseInsensitiveContains(want) {
                return .fail("\(m.name): root partition 2's \(what) is not the source's ('\(want)'): \(root)", details: root)
            }
            let espLines = table.split(separator: "\n").filter { $0.contains(" EF00 ") }
            // A volume set holds the original ESP.
            let wantESP = context.scenario.backup.kind != .volumeOnly || context.scenario.backup.esp == .synthesize
            guard espLines.count == (wantESP ? 1 : 0) else {
                return .fail("\(m.name): \(espLines.count) EFI System Partitions, expected \(wantESP ? 1 : 0): \(table)", details: table)
            }
            guard let line = espLines.first else { notes.append("\(m.name): GPT clean, root as recorded, no ESP (as expected)"); continue }
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 3, let first = UInt64(fields[1]), let last = UInt64(fields[2]), last > first else {
                return .fail("\(m.name): cannot read the ESP's sectors from '\(line)'")
            }
            let esp = context.directory.appendingPathComponent("esp-\(m.name).img").path
            defer { try? FileManager.default.removeItem(atPath: esp) }
            let src = try RawFile(path: raw)
            // dd (sparse) rather than a byte loop: this runs in debug builds too.
            try Shell.run("dd", ["if=\(raw)", "of=\(esp)", "bs=\(ss)", "skip=\(first)", "count=\(last - first + 1)", "conv=sparse", "status=none"])
            let fsck = try Shell.run("fsck.fat", ["-n", esp], check: false)
            let ftext = fsck.stdout + fsck.stderr
            let findings = ftext.split(separator: "\n").filter { !$0.hasPrefix("fsck.fat ") && !$0.contains(" files, ") }
            guard fsck.status == 0, findings.isEmpty else {
                return .fail("\(m.name): fsck.fat -n on the ESP: \(ftext.trimmingCharacters(in: .whitespacesAndNewlines))", details: ftext)
            }
            let loader = context.directory.appendingPathComponent("BOOTX64-\(m.name).EFI").path
            defer { try? FileManager.default.removeItem(atPath: loader) }
            try Shell.run("mcopy", ["-n", "-i", esp, "::/EFI/BOOT/BOOTX64.EFI", loader], environment: ["MTOOLS_SKIP_CHECK": "1"])
            let image = [UInt8](try Data(contentsOf: URL(fileURLWithPath: loader)))
            guard image.count > 2, image[0] == 0x4D, image[1] == 0x5A else {
                return .fail("\(m.name): \\EFI\\BOOT\\BOOTX64.EFI on the ESP is not a PE image (\(image.count) bytes)")
            }
            let uuid = DiskGenerator.rootUUID(m, seed: context.scenario.seed)
            guard Self.contains(image, Array("search.fs_uuid \(uuid) root".utf8)) else {
                return .fail("\(m.name): the ESP's loader does not search for the root file system \(uuid)")
            }
            var compared = ""
            if context.scenario.backup.kind == .volumeSet && !context.scenario.reconfigure {
                // A volume set composed back: the whole disk equals the source disk (its GPT
                // re-encoded, its ESP and root from their images), byte for byte.
                let expected = try ExpectedDisk.sourceExpectation(machine: m, in: context)
                let c = try Shell.run("cmp", [raw, expected], check: false)
                guard c.status == 0 else {
                    return .fail("\(m.name): the composed volume set differs from the source disk: \((c.stdout + c.stderr).trimmingCharacters(in: .whitespacesAndNewlines))")
                }
                compared = ", the whole disk equals the source disk"
            } else if context.scenario.backup.kind == .volumeOnly {
                // Everything outside the GPT structures and the synthesized ESP equals the
                // independent expectation (the root volume at its start, zeros elsewhere).
                let expected = try RawFile(path: try ExpectedDisk.sourceExpectation(machine: m, in: context))
                guard expected.size == src.size else { return .fail("\(m.name): exposed size \(src.size) ≠ expected \(expected.size)") }
                // A reconfigured cell: the layer's ranges too (qemu-img-compare holds them inside the
                // OS volume and compares the rest of it).
                let layerRanges = try CompareValidator.layerRanges(machine: m, in: context)
                let skip: [Range<UInt64>] = [0..<m.gptHeadBytes, (first * ss)..<((last + 1) * ss), (src.size - m.gptTailBytes)..<src.size] + layerRanges
                var ranges: [Range<UInt64>] = []
                var pos: UInt64 = 0
                for s in skip.sorted(by: { $0.lowerBound < $1.lowerBound }) {
                    if s.lowerBound > pos { ranges.append(pos..<s.lowerBound) }
                    pos = max(pos, s.upperBound)
                }
                if pos < src.size { ranges.append(pos..<src.size) }
                for r in ranges {
                    let c = try Shell.run("cmp", ["-i", "\(r.lowerBound)", "-n", "\(r.count)", raw, expected.path], check: false)
                    guard c.status == 0 else {
                        return .fail("\(m.name): exposed disk differs from the expectation in \(r) (outside the ESP and GPT structures): \((c.stdout + c.stderr).trimmingCharacters(in: .whitespacesAndNewlines))")
                    }
                }
                compared = ", the rest equals the expectation"
            }
            notes.append("\(m.name): \(ss == 512 ? "" : "\(ss)-byte sectors, ")sgdisk -v clean, root as recorded, ESP at LBA \(first)–\(last) fsck-clean, BOOTX64.EFI \(image.count) bytes finds UUID \(uuid)\(compared)")
        }
        return .pass(notes.joined(separator: "; "))
    }

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= haystack.count else { return false }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if haystack[i..<i + needle.count].elementsEqual(needle) { return true }
        }
        return false
    }
}
