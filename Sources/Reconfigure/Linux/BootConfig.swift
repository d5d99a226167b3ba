import Foundation

/// The parts of syslinux/extlinux and GRUB configuration files that reconfiguration reads and edits.
public enum BootConfig {
    /// Where boot loaders keep their configuration, most specific first.
    public static let syslinuxPaths = ["/boot/extlinux/extlinux.conf", "/extlinux/extlinux.conf", "/extlinux.conf",
                                       "/boot/syslinux/syslinux.cfg", "/syslinux/syslinux.cfg", "/syslinux.cfg"]
    public static let grubPaths = ["/boot/grub/grub.cfg", "/grub/grub.cfg"]

    /// initrd files named by a syslinux config: `INITRD a` lines and `initrd=a,b` in APPEND.
    public static func syslinuxInitrds(_ text: String) -> [String] {
        var out: [String] = []
        for raw in text.split(separator: "\n") {
            let words = raw.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let kw = words.first?.lowercased() else { continue }
            if kw == "initrd", words.count > 1 { out += words[1].split(separator: ",").map(String.init) }
            if kw == "append" {
                for w in words.dropFirst() where w.hasPrefix("initrd=") {
                    out += w.dropFirst("initrd=".count).split(separator: ",").map(String.init)
                }
            }
        }
        var seen = Set<String>()
        return out.filter { seen.insert($0).inserted }
    }

    /// initrd files named by `initrd` commands in a grub.cfg.
    public static func grubInitrds(_ text: String) -> [String] {
        var out: [String] = []
        for raw in text.split(separator: "\n") {
            let words = raw.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            if words.first == "initrd" { out += words.dropFirst() }
        }
        var seen = Set<String>()
        return out.filter { seen.insert($0).inserted }
    }

    /// Every `root=/dev/<disk><n>` token: the partition number it names.
    public static func rootDevices(_ text: String) -> [(token: String, partition: Int)] {
        var out: [(String, Int)] = []
        for word in text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }) where word.hasPrefix("root=/dev/") {
            if let n = partitionNumber(String(word.dropFirst("root=".count))) { out.append((String(word), n)) }
        }
        return out
    }

    /// `/dev/sda1`, `/dev/hda2`, `/dev/vda3`, `/dev/xvda1` → the partition number; nil for whole
    /// disks and anything else (UUID=, LABEL=, /dev/mapper, …), which need no rewrite.
    public static func partitionNumber(_ device: String) -> Int? {
        let prefixes = ["/dev/sd", "/dev/hd", "/dev/vd", "/dev/xvd"]
        guard let p = prefixes.first(where: { device.hasPrefix($0) }) else { return nil }
        let rest = device.dropFirst(p.count)
        let letters = rest.prefix { $0.isLetter && $0.isLowercase }
        let digits = rest.dropFirst(letters.count)
        guard !letters.isEmpty, !digits.isEmpty, digits.allSatisfy(\.isNumber) else { return nil }
        return Int(digits)
    }

    /// Rewrites /dev/<disk><n> in the first field of fstab lines to UUID=; returns the new text and
    /// the devices it rewrote. `uuid(n)` gives partition n's file-system UUID, or nil to leave it.
    public static func fstabWithUUIDs(_ text: String, uuid: (Int) throws -> String?) rethrows -> (String, [String]) {
        var changed: [String] = []
        var lines: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            let first = trimmed.prefix { $0 != " " && $0 != "\t" }
            if !trimmed.hasPrefix("#"), let n = partitionNumber(String(first)), let u = try uuid(n) {
                lines.append(String(line.prefix(line.count - trimmed.count)) + "UUID=\(u)" + trimmed.dropFirst(first.count))
                changed.append("\(first) → UUID=\(u)")
            } else {
                lines.append(String(line))
            }
        }
        return (lines.joined(separator: "\n"), changed)
    }

    /// Keeps fstab's `/boot/efi` entry consistent with the disk's EFI System Partition
    /// (docs/uefi.md): a volume exposed with a synthesized ESP has a FAT volume ID that is not the
    /// original ESP's, so an entry naming a file system the disk does not have (`UUID=`, or a
    /// `/dev/…` node) is pointed at `espUUID`. Entries already naming a file system on the disk,
    /// comment lines and other mount points are left alone. Returns the new text and the changes.
    public static func fstabWithESP(_ text: String, espUUID: String, diskUUIDs: Set<String>) -> (String, [String]) {
        var changed: [String] = []
        var lines: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            let fields = trimmed.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard !trimmed.hasPrefix("#"), fields.count >= 2, fields[1] == "/boot/efi" || fields[1] == "/efi" else {
                lines.append(String(line)); continue
            }
            let spec = String(fields[0])
            let named = spec.hasPrefix("UUID=") ? String(spec.dropFirst(5)) : nil
            let onDisk = named.map { n in diskUUIDs.contains { $0.caseInsensitiveCompare(n) == .orderedSame } } ?? false
            guard !onDisk, spec != "UUID=\(espUUID)" else { lines.append(String(line)); continue }
            lines.append(String(line.prefix(line.count - trimmed.count)) + "UUID=\(espUUID)" + trimmed.dropFirst(fields[0].count))
            changed.append("\(spec) \(fields[1]) → UUID=\(espUUID) (the disk's EFI System Partition)")
        }
        return (lines.joined(separator: "\n"), changed)
    }
}
