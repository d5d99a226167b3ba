import Foundation

/// The registry and boot-sector values a Windows reconfiguration must leave on an `os:
/// windows-hives` machine's exposed disk, read back with tools BootLab did not write, from the
/// disk as QEMU reads it (converted to raw), and judged against the scenario and drivers.json,
/// never against the reconfiguration's own report:
/// - the MBR (read here byte by byte): one NTFS partition (type 07) at the exposed start;
/// - the NTFS boot sector: hidden sectors (offset 0x1C) = that start;
/// - `ntfscat` (ntfs-3g) extracts `Boot/BCD` and `Windows/System32/config/SYSTEM`;
/// - `hivexregedit --export` (hivex) dumps them; every BCD device element (`…\Elements\11000001`,
///   `21000001`) names the exposed disk's signature (0x3C) and the partition's byte offset (0x20);
///   every MBR-style `MountedDevices` value (signature + offset) does too; in the current control
///   set each Windows service of the target's controller (drivers.json) has `Start` = 0 (boot).
///
/// This does not boot Windows (there is none: the machine is hives on NTFS; the cell's expectation
/// says `not booted`). A wrong value fails naming the key, the value and what it should be.
public struct WindowsHivesValidator: Validator {
    public let machine: String
    public let name: String

    public init(machine: String) {
        self.machine = machine
        self.name = machine == "main" ? "windows-hives" : "windows-hives:\(machine)"
    }

    public func validate(in context: CellContext) throws -> StepOutcome {
        guard let m = context.scenario.machines.first(where: { $0.name == machine }) else { return .fail("scenario has no machine \(machine)") }
        guard let fe = context.frontEnd else { return .fail("no front-end: the expose step did not run") }
        let dir = context.directory.appendingPathComponent("windows-hives-\(machine)")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let raw = dir.appendingPathComponent("disk.raw").path
        try QemuImg.convertToRaw(imageOptions: fe.imageOptions(machine: m.name), output: raw)

        // Where exposure put the volume (its source start unless the scenario moves it).
        let start = context.scenario.backup.kind == .volumeOnly ? (context.scenario.backup.exposePartitionStart ?? m.partitionStart) : m.partitionStart
        let offset = start * 512
        let sector0 = try Self.read(raw, offset: 0, count: 512)
        guard sector0[510] == 0x55, sector0[511] == 0xAA else { return .fail("\(m.name): exposed disk has no MBR signature 55AA") }
        let signature = Self.le(sector0, 440, 4)
        let type = sector0[446 + 4], firstLBA = Self.le(sector0, 446 + 8, 4)
        guard type == 0x07, firstLBA == start else {
            return .fail(String(format: "\(m.name): MBR partition 1 is type %02X at LBA \(firstLBA), expected 07 (NTFS) at LBA \(start)", type))
        }
        guard signature != 0 else { return .fail("\(m.name): the exposed disk's MBR signature is 0: nothing for the hives to name") }
        var failures: [String] = []

        let boot = try Self.read(raw, offset: offset, count: 512)
        let hidden = Self.le(boot, 0x1C, 4)
        guard Array(boot[3..<11]) == Array("NTFS    ".utf8) else { return .fail("\(m.name): no NTFS boot sector at LBA \(start)") }
        if hidden != start { failures.append("NTFS boot sector hidden sectors (0x1C) = \(hidden), expected \(start)") }

        let part = dir.appendingPathComponent("volume.ntfs").path
        try Shell.run("dd", ["if=\(raw)", "of=\(part)", "bs=512", "skip=\(start)", "count=\(m.volumeSize / 512)", "conv=sparse", "status=none"])
        var hives: [String: [String: [String: Value]]] = [:]
        for (label, path) in [("BCD", "Boot/BCD"), ("SYSTEM", "Windows/System32/config/SYSTEM")] {
            let file = dir.appendingPathComponent(label).path
            let cat = try Shell.run("bash", ["-c", "ntfscat \"$1\" \"$2\" > \"$3\"", "ntfscat", part, path, file], check: false)
            guard cat.status == 0 else { return .fail("\(m.name): ntfscat cannot read \(path) from the exposed volume: \(cat.stderr.suffix(300))") }
            let export = try Shell.run("hivexregedit", ["--export", file, "\\"], check: false)
            guard export.status == 0 else { return .fail("\(m.name): hivexregedit cannot read \(path): \(export.stderr.suffix(300))") }
            hives[label] = Self.parseReg(export.stdout)
        }

        // BCD device elements.
        let elements = (hives["BCD"] ?? [:]).filter { $0.key.hasSuffix("\\elements\\11000001") || $0.key.hasSuffix("\\elements\\21000001") }
        if elements.isEmpty { failures.append("BCD has no device elements (…\\Elements\\11000001 / 21000001)") }
        for (key, values) in elements.sorted(by: { $0.key < $1.key }) {
            guard let e = values["element"]?.bytes, e.count >= 0x40 else { failures.append("BCD \(key)\\Element: missing or shorter than 0x40 bytes"); continue }
            let s = Self.le(e, 0x3C, 4), o = Self.le(e, 0x20, 8)
            if s != signature { failures.append(String(format: "BCD \(key)\\Element disk signature (0x3C) = %08X, expected the exposed disk's %08X", s, signature)) }
            if o != offset { failures.append("BCD \(key)\\Element partition offset (0x20) = \(o), expected \(offset)") }
        }

        // MountedDevices: MBR-style values are 12 bytes (signature, offset).
        let system = hives["SYSTEM"] ?? [:]
        let mounted = (system["mounteddevices"] ?? [:]).filter { $0.value.bytes.count == 12 }
        if mounted.isEmpty { failures.append("SYSTEM MountedDevices holds no MBR volume value") }
        for (name, value) in mounted.sorted(by: { $0.key < $1.key }) {
            let s = Self.le(value.bytes, 0, 4), o = Self.le(value.bytes, 4, 8)
            if s != signature || o != offset {
                failures.append(String(format: "SYSTEM MountedDevices\\\(name) = signature %08X offset \(o), expected %08X offset \(offset)", s, signature))
            }
        }

        // The target's storage services, boot-start in the current control set.
        let current = system["select"]?["current"].map { Self.le($0.bytes, 0, 4) } ?? 1
        let controlSet = String(format: "controlset%03llu", current)
        let services = try Self.windowsServices(context)
        if services.isEmpty { failures.append("drivers.json lists no Windows services for controller \(context.target.controller.kind)") }
        for service in services {
            guard let v = system["\(controlSet)\\services\\\(service.lowercased())"]?["start"] else {
                failures.append("SYSTEM \(controlSet)\\Services\\\(service)\\Start: missing, expected 0 (boot start)")
                continue
            }
            let startValue = Self.le(v.bytes, 0, 4)
            if v.type != 4 || startValue != 0 { failures.append("SYSTEM \(controlSet)\\Services\\\(service)\\Start = \(startValue) (type \(v.type)), expected REG_DWORD 0 (boot start)") }
        }

        let summary = String(format: "disk signature %08X, volume at LBA \(start): ", signature)
            + "\(elements.count) BCD device elements, \(mounted.count) MountedDevices values, services \(services.joined(separator: " ")) boot-start in \(controlSet), hidden sectors \(hidden)"
        if !failures.isEmpty {
            return .fail("\(m.name): \(failures.count) wrong value(s): " + failures.joined(separator: "; "), details: summary)
        }
        let why: String
        if case .notBooted(let reason) = context.scenario.expectation(for: context.target.name) { why = "; not booted: \(reason)" } else { why = "" }
        return .pass(summary + why)
    }

    struct Value: Equatable { var type: Int; var bytes: [UInt8] }

    static func windowsServices(_ context: CellContext) throws -> [String] {
        let url = context.suite.directory.appendingPathComponent("drivers.json")
        guard let root = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any],
              let controllers = root["controllers"] as? [String: Any],
              let controller = controllers[context.target.controller.kind] as? [String: Any] else {
            throw LabError.file(path: url.path, reason: "no controller \(context.target.controller.kind)")
        }
        let services = (controller["windows"] as? [String: Any])?["services"] as? [[String: Any]] ?? []
        return services.compactMap { $0["name"] as? String }
    }

    static func read(_ path: String, offset: UInt64, count: Int) throws -> [UInt8] {
        guard let h = FileHandle(forReadingAtPath: path) else { throw LabError.file(path: path, reason: "cannot open") }
        defer { try? h.close() }
        try h.seek(toOffset: offset)
        let d = try h.read(upToCount: count) ?? Data()
        guard d.count == count else { throw LabError.file(path: path, reason: "short read at \(offset): \(d.count) of \(count) bytes") }
        return Array(d)
    }

    static func le(_ b: [UInt8], _ at: Int, _ n: Int) -> UInt64 {
        guard at >= 0, at + n <= b.count else { return 0 }
        var v: UInt64 = 0
        for i in (0..<n).reversed() { v = v << 8 | UInt64(b[at + i]) }
        return v
    }

    /// `hivexregedit --export` text → lower-cased key path (no leading `\`) → lower-cased value
    /// name → type and bytes. Handles `dword:`, `hex:` (binary), `hex(N):` and quoted strings
    /// (kept as their UTF-8 bytes; only dwords and binaries are judged here), and `\` line
    /// continuations.
    static func parseReg(_ text: String) -> [String: [String: Value]] {
        var lines: [String] = []
        var pending = ""
        for raw in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            var line = String(raw)
            if !pending.isEmpty { line = pending + line.trimmingCharacters(in: .whitespaces); pending = "" }
            if line.hasSuffix("\\"), line.contains("=hex") { pending = String(line.dropLast()); continue }
            lines.append(line)
        }
        var out: [String: [String: Value]] = [:]
        var key = ""
        for line in lines {
            if line.hasPrefix("["), line.hasSuffix("]") {
                key = String(line.dropFirst().dropLast()).lowercased()
                while key.hasPrefix("\\") { key.removeFirst() }
                out[key, default: [:]] = out[key] ?? [:]
                continue
            }
            guard line.hasPrefix("\""), let eq = line.range(of: "\"=", options: .backwards) else { continue }
            let name = String(line[line.index(after: line.startIndex)..<eq.lowerBound]).replacingOccurrences(of: "\\\\", with: "\\").lowercased()
            let data = String(line[eq.upperBound...])
            var value: Value?
            if data.hasPrefix("dword:"), let n = UInt32(data.dropFirst(6), radix: 16) {
                value = Value(type: 4, bytes: [UInt8(n & 0xFF), UInt8((n >> 8) & 0xFF), UInt8((n >> 16) & 0xFF), UInt8(n >> 24)])
            } else if data.hasPrefix("hex") , let colon = data.firstIndex(of: ":") {
                let prefix = data[..<colon]
                let type = prefix == "hex" ? 3 : Int(prefix.dropFirst(4).dropLast(), radix: 16) ?? -1
                let bytes = data[data.index(after: colon)...].split(separator: ",").compactMap { UInt8($0.trimmingCharacters(in: .whitespaces), radix: 16) }
                value = Value(type: type, bytes: bytes)
            } else if data.hasPrefix("\"") {
                value = Value(type: 1, bytes: Array(data.utf8))
            }
            if let value { out[key, default: [:]][name] = value }
        }
        return out
    }
}
