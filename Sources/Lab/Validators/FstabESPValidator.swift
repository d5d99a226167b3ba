import Foundation

/// Holds an `os: debian-uefi` machine's `/etc/fstab` to the EFI System Partition of the disk it
/// boots from (docs/uefi.md, "A real Debian UEFI install"). The source volume's fstab names the
/// original ESP by its FAT volume ID (`UUID=XXXX-XXXX /boot/efi vfat …`); a volume-only backup
/// exposed with `--esp` gets a *synthesized* ESP with another volume ID, so unless the
/// reconfiguration rewrites that entry, systemd waits for a device that never appears and the
/// guest ends in emergency mode. The boot shows the outcome; this check shows the cause, on the
/// bytes: the exposed (reconfigured) disk converted to raw by qemu-img, the ESP found in its GPT
/// by util-linux's `sfdisk --json` (type C12A7328-F81F-11D2-BA4B-00A0C93EC93B), its volume ID read
/// by `blkid -p` at that offset, and `/etc/fstab` copied out of the root by `debugfs`. None of the
/// three readers is ours.
public struct FstabESPValidator: Validator {
    public let name = "fstab-esp"
    public let machine: String

    public init(machine: String) { self.machine = machine }

    static let espType = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"

    public func validate(in context: CellContext) throws -> StepOutcome {
        guard let m = context.scenario.machines.first(where: { $0.name == machine }) else {
            return .fail("scenario has no machine \(machine)")
        }
        guard let fe = context.frontEnd else { return .fail("no front-end: the expose step did not run") }
        let raw = context.directory.appendingPathComponent("fstab-esp-\(m.name).raw").path
        try QemuImg.convertToRaw(imageOptions: fe.imageOptions(machine: m.name), output: raw)
        defer { try? FileManager.default.removeItem(atPath: raw) }
        let start = context.scenario.backup.kind == .disk ? m.partitionStart : (context.scenario.backup.exposePartitionStart ?? m.partitionStart)
        return try Self.check(disk: raw, machine: m, rootStart: start, sourceVolume: context.generated[m.name]?.volumePath,
                              work: context.directory)
    }

    /// The check on a raw disk image whose root file system starts at sector `rootStart`;
    /// `sourceVolume` (the backed-up volume) only adds what its fstab said to the message.
    static func check(disk raw: String, machine m: SourceMachine, rootStart start: UInt64, sourceVolume: String?, work: URL) throws -> StepOutcome {
        // The ESP(s) of the disk, from its GPT as util-linux reads it.
        let table = try Shell.run("sfdisk", ["--json", raw])
        guard let top = try JSONSerialization.jsonObject(with: Data(table.stdout.utf8)) as? [String: Any],
              let pt = top["partitiontable"] as? [String: Any],
              let parts = pt["partitions"] as? [[String: Any]] else {
            return .fail("sfdisk --json found no partition table on the exposed disk")
        }
        let sectorSize = (pt["sectorsize"] as? Int) ?? 512
        let esps = parts.filter { ($0["type"] as? String)?.uppercased() == Self.espType }
        guard esps.count == 1, let espStart = esps[0]["start"] as? Int else {
            return .fail("the exposed disk has \(esps.count) EFI System Partitions (sfdisk --json): /boot/efi cannot be one file system")
        }
        let espOffset = UInt64(espStart) * UInt64(sectorSize)
        let blkid = try Shell.run("blkid", ["-p", "-O", String(espOffset), "-o", "export", raw], check: false)
        let fields = Self.exportFields(blkid.stdout)
        guard fields["TYPE"] == "vfat", let espUUID = fields["UUID"], !espUUID.isEmpty else {
            return .fail("blkid -p at the ESP (LBA \(espStart)) finds no FAT file system with a volume ID: \(blkid.stdout) \(blkid.stderr)")
        }

        // /etc/fstab on the disk's root, and on the source volume (what the reconfiguration started from).
        let local = work.appendingPathComponent("fstab-\(m.name)").path
        try ChangedFilesValidator().extract(m, image: raw, offset: start * UInt64(sectorSize), path: "/etc/fstab", to: local)
        guard let text = try? String(contentsOfFile: local, encoding: .utf8) else {
            return .fail("no /etc/fstab on the exposed root (partition at LBA \(start))")
        }
        var original = "?"
        if let volume = sourceVolume {
            let src = work.appendingPathComponent("fstab-\(m.name).source").path
            try ChangedFilesValidator().extract(m, image: volume, offset: 0, path: "/etc/fstab", to: src)
            defer { try? FileManager.default.removeItem(atPath: src) }
            if let t = try? String(contentsOfFile: src, encoding: .utf8), case .success(let spec) = Self.espEntry(in: t) { original = spec }
        }
        switch Self.espEntry(in: text) {
        case .failure(let why):
            return .fail("\(m.name): /etc/fstab on the exposed disk: \(why)", attachments: ["fstab": local])
        case .success(let spec):
            guard spec.caseInsensitiveCompare("UUID=\(espUUID)") == .orderedSame else {
                return .fail("\(m.name): /etc/fstab mounts /boot/efi from \(spec), but the disk's ESP (LBA \(espStart)) has volume ID \(espUUID) (source fstab: \(original))",
                             attachments: ["fstab": local])
            }
            return .pass("\(m.name): /etc/fstab's /boot/efi is \(spec) = the ESP at LBA \(espStart) (blkid); the source fstab said \(original)",
                         attachments: ["fstab": local])
        }
    }

    /// Why an fstab's ESP entry is unusable, or its device spec.
    public enum EntryError: Error, Equatable, CustomStringConvertible {
        case none
        case several(Int)
        case notVFAT(String)
        public var description: String {
            switch self {
            case .none: return "no /boot/efi entry"
            case .several(let n): return "\(n) /boot/efi entries"
            case .notVFAT(let t): return "/boot/efi is of type \(t), not vfat"
            }
        }
    }

    /// The device field of the one non-comment `/boot/efi` line (type vfat).
    public static func espEntry(in fstab: String) -> Result<String, EntryError> {
        var found: [(spec: String, type: String)] = []
        for line in fstab.split(whereSeparator: \.isNewline) {
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let first = f.first, !first.hasPrefix("#"), f.count >= 3, f[1] == "/boot/efi" else { continue }
            found.append((String(f[0]), String(f[2])))
        }
        guard !found.isEmpty else { return .failure(.none) }
        guard found.count == 1 else { return .failure(.several(found.count)) }
        guard found[0].type == "vfat" else { return .failure(.notVFAT(found[0].type)) }
        return .success(found[0].spec)
    }

    /// `blkid -o export` lines (`KEY=value`).
    static func exportFields(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            guard let eq = line.firstIndex(of: "=") else { continue }
            out[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        return out
    }
}
