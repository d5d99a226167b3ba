import Foundation
import Processes

/// A disk QEMU can open: a file with its format, or a block-driver option string for what a
/// plain file cannot express (an NBD export, a `json:` pseudo-file, a FUSE-exposed VHDX).
public enum DiskReference: Sendable, Codable, Equatable {
    case file(path: String, format: String)
    /// QEMU `-drive` options naming the image, e.g. `driver=vhdx,file.driver=nbd,file.server.type=unix,file.server.path=S`
    /// or `file=json:{…}` (commas inside values doubled, as `-drive` requires).
    case driveOptions(String)

    /// The `-drive` options before the target adds its interface. `snapshot=on` keeps the guest's
    /// writes in a temporary overlay: the disk under test is never modified.
    var driveOptions: String {
        switch self {
        case .file(let path, let format):
            return "file=\(path.replacingOccurrences(of: ",", with: ",,")),format=\(format),snapshot=on"
        case .driveOptions(let options):
            return options.contains("snapshot=") ? options : options + ",snapshot=on"
        }
    }

    public var description: String {
        switch self {
        case .file(let path, let format): return "\(format) \(path)"
        case .driveOptions(let o): return o
        }
    }
}

extension Termination {
    /// The number reports have always recorded (Foundation's `terminationStatus`): the exit
    /// status, or the bare signal number for a killed QEMU.
    var foundationStatus: Int32 {
        switch self {
        case .exited(let s), .signaled(let s): return s
        }
    }
}

public struct BootResult: Sendable, Codable, Equatable {
    public var markerSeen: Bool
    public var timedOut: Bool
    public var exitStatus: Int32
    public var seconds: Double
    public var consoleLogPath: String
    /// The last `BOOTLAB:` line (or kernel panic line) explaining a failed boot, if any.
    public var failureLine: String?
    public var commandLine: [String]
}

/// Boots a disk under QEMU (TCG only: this machine's KVM cannot run guests) with a target's
/// machine and controller, serial console to a file, and reports whether the marker appeared.
public enum BootRunner {
    public static let defaultTimeout: Double = 90

    /// Debian's `ovmf` package: the code image (read-only, shared) and the variable store
    /// template (copied per boot: the firmware writes it). The plain 4M build: Secure Boot off
    /// (the `.secboot`/`.ms` variants need SMM and enrolled keys; docs/uefi.md).
    public static let ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    public static let ovmfVarsTemplate = "/usr/share/OVMF/OVMF_VARS_4M.fd"

    /// How much longer than the lab's boot timeout a firmware may take: OVMF's own start-up under
    /// TCG costs what SeaBIOS's does many times over (on a loaded 2-core machine it alone can take
    /// a minute), so UEFI targets get twice the timeout. A failed UEFI boot is stopped at the
    /// firmware's shell, so the larger timeout only ever delays a hung boot.
    public static func timeoutScale(firmware: String) -> Double { firmware == "ovmf" ? 2 : 1 }

    /// Firmware names a target may state (`firmware:`).
    public static let firmwares = ["seabios", "ovmf"]

    /// Console text after which a firmware boots nothing more: OVMF starts its built-in UEFI
    /// shell only once every boot option failed (BdsDxe's "failed to load Boot000N … Not Found"
    /// lines say why). The boot is stopped there rather than left to the timeout.
    static func gaveUpPatterns(firmware: String) -> [String] {
        // OVMF tries the disks first, then the NIC (iPXE's option ROM, then its own PXE and HTTP
        // boot over IPv4 and IPv6: minutes of DHCP timeouts), then its shell. A marker only ever
        // comes from a disk, so the first sign of network boot means every disk option failed.
        firmware == "ovmf" ? ["UEFI Interactive Shell", "No bootable option or device was found",
                              "Open Source Network Boot Firmware", ">>Start PXE over IPv4", ">>Start HTTP Boot"] : []
    }

    /// The QEMU device whose `logical_block_size` presents a controller's disk, or nil when QEMU
    /// cannot give it other than 512-byte sectors (IDE, AHCI: ATA disks here are 512).
    public static func blockSizeDevice(controller kind: String) -> String? {
        switch kind {
        case "virtio-blk": return "virtio-blk-pci"
        case "virtio-scsi", "pvscsi", "lsi", "lsi53c895a", "megasas", "scsi": return "scsi-hd"
        default: return nil
        }
    }

    /// A 4Kn disk (docs/uefi.md, "4 KiB sectors"): qcow2 stores no sector size, so the VM is told —
    /// `-global <device>.logical_block_size=N` and `physical_block_size=N` (QEMU refuses a logical
    /// size above the physical). Nothing for 512, so other cells' command lines are unchanged.
    public static func blockSizeArguments(sectorSize: Int, target: Target) -> [String] {
        guard sectorSize != 512, let device = blockSizeDevice(controller: target.controller.kind) else { return [] }
        return ["-global", "\(device).logical_block_size=\(sectorSize)", "-global", "\(device).physical_block_size=\(sectorSize)"]
    }

    /// `varsPath`: the per-boot copy of the UEFI variable store (OVMF targets only).
    /// `sectorSize`: the logical sectors the disk is presented with (the machine's).
    public static func arguments(disk: DiskReference, target: Target, varsPath: String? = nil, sectorSize: Int = 512) -> [String] {
        var args = ["-accel", "tcg", "-machine", target.machine, "-m", String(target.memoryMiB),
                    "-display", "none", "-monitor", "none"] + (target.nic?.qemuArguments ?? ["-nic", "none"]) + ["-no-reboot"]
        if target.firmware == "ovmf" {
            args += ["-drive", "if=pflash,format=raw,unit=0,readonly=on,file=\(ovmfCode)",
                     "-drive", "if=pflash,format=raw,unit=1,file=\((varsPath ?? "ovmf-vars.fd").replacingOccurrences(of: ",", with: ",,"))"]
        }
        let drive = disk.driveOptions
        args += blockSizeArguments(sectorSize: sectorSize, target: target)
        args += target.qemuArguments.map { $0.replacingOccurrences(of: "{drive}", with: drive) }
        return args
    }

    /// `markerLine` is the console text that proves the boot (default: the tiny Linux's
    /// `BOOTLAB-MARKER: <marker>`).
    public static func boot(disk: DiskReference, target: Target, marker: String, consoleLog: URL,
                            timeout: Double = defaultTimeout, markerLine: String? = nil, sectorSize: Int = 512) throws -> BootResult {
        if let runner = target.bootRunner {
            return try bootWithCustomRunner(runner, disk: disk, target: target, marker: marker, consoleLog: consoleLog, timeout: timeout, markerLine: markerLine)
        }
        let fm = FileManager.default
        try? fm.removeItem(at: consoleLog)
        try fm.createDirectory(at: consoleLog.deletingLastPathComponent(), withIntermediateDirectories: true)
        var varsPath: String?
        if target.firmware == "ovmf" {
            let vars = consoleLog.deletingLastPathComponent().appendingPathComponent(consoleLog.deletingPathExtension().lastPathComponent + "-ovmf-vars.fd")
            try? fm.removeItem(at: vars)
            do { try fm.copyItem(atPath: ovmfVarsTemplate, toPath: vars.path) } catch {
                throw LabError.missing(ovmfVarsTemplate, need: "UEFI targets boot with OVMF (install the ovmf package: ci/packages/uefi.txt)")
            }
            guard fm.fileExists(atPath: ovmfCode) else {
                throw LabError.missing(ovmfCode, need: "UEFI targets boot with OVMF (install the ovmf package: ci/packages/uefi.txt)")
            }
            varsPath = vars.path
        }
        let args = arguments(disk: disk, target: target, varsPath: varsPath, sectorSize: sectorSize) + ["-serial", "file:\(consoleLog.path)"]
        // Past the timeout QEMU gets SIGTERM, then SIGKILL 5 s later; a hung boot is a result here.
        let start = Date()
        let timedOut: Bool
        let termination: Termination
        let stderr: String
        var gaveUp: String?
        let patterns = gaveUpPatterns(firmware: target.firmware)
        if patterns.isEmpty {
            let run: Completed
            do {
                run = try Command(["qemu-system-x86_64"] + args, stdout: .null, stderr: .capture).run(timeout: timeout, check: false)
            } catch let e as ProcessError {
                throw LabError.process(e)
            }
            (timedOut, termination, stderr) = (run.timedOut, run.termination, run.stderrText)
        } else {
            // Watch the console while QEMU runs: a firmware that gave up never powers off.
            let errLog = consoleLog.deletingPathExtension().appendingPathExtension("qemu-stderr")
            let child: ChildProcess
            do {
                child = try Command(["qemu-system-x86_64"] + args, stdout: .null, stderr: .file(errLog.path, append: false)).spawn()
            } catch let e as ProcessError {
                throw LabError.process(e)
            }
            var ended: Termination?
            var late = false
            while ended == nil {
                ended = child.wait(timeout: 0.5)
                if ended != nil { break }
                let text = String(decoding: (try? Data(contentsOf: consoleLog)) ?? Data(), as: UTF8.self)
                if let p = patterns.first(where: { text.contains($0) }) {
                    gaveUp = p
                    ended = child.terminate(grace: 5)
                } else if Date().timeIntervalSince(start) > timeout {
                    late = true
                    ended = child.terminate(grace: 5)
                }
            }
            termination = ended!
            timedOut = late
            stderr = String(decoding: (try? Data(contentsOf: errLog)) ?? Data(), as: UTF8.self)
                .split(separator: "\n").filter { !$0.contains("terminating on signal") }.joined(separator: "\n")
            try? fm.removeItem(at: errLog)
        }
        let seconds = Date().timeIntervalSince(start)
        let console = (try? String(contentsOf: consoleLog, encoding: .utf8)) ?? String(decoding: (try? Data(contentsOf: consoleLog)) ?? Data(), as: UTF8.self)
        if !stderr.isEmpty {
            // QEMU's own complaints (bad options, missing files) belong with the console output.
            if let h = try? FileHandle(forWritingTo: consoleLog) {
                h.seekToEndOfFile()
                h.write(Data("\n[qemu stderr] \(stderr)".utf8))
                try? h.close()
            }
        }
        let lines = console.split(whereSeparator: \.isNewline).map(String.init)
        let firmwareFailure = lines.last { $0.contains("BdsDxe: failed to load") || $0.contains("No bootable option") }
            .map { line in gaveUp.map { "\(Self.stripEscapes(line)) (the firmware then gave up on its disks: nothing bootable; stopped at '\($0)')" } ?? Self.stripEscapes(line) }
        let (markerSeen, failure) = judge(console: console, marker: marker, stderr: stderr, tool: "qemu", firmwareFailure: firmwareFailure, markerLine: markerLine)
        return BootResult(markerSeen: markerSeen, timedOut: timedOut, exitStatus: termination.foundationStatus,
                          seconds: seconds, consoleLogPath: consoleLog.path, failureLine: markerSeen ? nil : failure,
                          commandLine: ["qemu-system-x86_64"] + args + ["-serial", "file:\(consoleLog.path)"])
    }

    /// OVMF paints its screen with ANSI sequences on the serial console; reports want the text.
    static func stripEscapes(_ line: String) -> String {
        var out = ""
        var it = line.makeIterator()
        while let c = it.next() {
            if c == "\u{1B}" {
                // CSI: ESC [ parameters… final byte (@–~).
                guard let n = it.next(), n == "[" else { continue }
                while let p = it.next(), !(p.isLetter || p == "~" || p == "@") {}
                continue
            }
            if c != "\r" { out.append(c) }
        }
        return out.trimmingCharacters(in: .whitespaces)
    }

    /// Whether the console shows the marker, and else the line that best says why not.
    static func judge(console: String, marker: String, stderr: String, tool: String, firmwareFailure: String? = nil, markerLine: String? = nil) -> (Bool, String?) {
        let lines = console.split(whereSeparator: \.isNewline).map(String.init)
        let wanted = markerLine ?? Initramfs.markerPrefix + marker
        let markerSeen = lines.contains { $0.contains(wanted) }
        let failure = lines.last { $0.contains("BOOTLAB: root") || $0.contains("BOOTLAB: marker") || $0.contains("Kernel panic") || $0.contains("failed: ") }
            ?? firmwareFailure
            ?? (stderr.isEmpty ? nil : "\(tool): " + stderr.split(separator: "\n").first.map(String.init)!)
        return (markerSeen, failure)
    }

    /// A target's own boot runner (`boot_runner:`): the command template with its placeholders
    /// filled, bounded by its timeout (then SIGTERM, SIGKILL 5 s later), the console read from the
    /// file it wrote or from its stdout. The disk must be a file: a real hypervisor host opens
    /// files, not QEMU block-driver strings (an NBD-served cell cannot use a custom runner).
    static func bootWithCustomRunner(_ runner: CustomBootRunner, disk: DiskReference, target: Target, marker: String,
                                     consoleLog: URL, timeout: Double, markerLine: String? = nil) throws -> BootResult {
        guard case .file(let path, let format) = disk else {
            throw LabError.cell("boot runner of target \(target.name)", reason: "needs a disk file, but this cell's disk is \(disk.description) (a custom runner boots files; use a FUSE-exposed scenario)")
        }
        let fm = FileManager.default
        try? fm.removeItem(at: consoleLog)
        try fm.createDirectory(at: consoleLog.deletingLastPathComponent(), withIntermediateDirectories: true)
        let limit = runner.timeout ?? timeout
        let values = ["{disk}": path, "{format}": format, "{console}": consoleLog.path, "{marker}": marker,
                      "{memory}": String(target.memoryMiB), "{name}": target.name, "{timeout}": String(Int(limit))]
        let argv = runner.command.map { arg in
            values.reduce(arg) { $0.replacingOccurrences(of: $1.key, with: $1.value) }
        }
        let start = Date()
        let run: Completed
        do {
            let stdout: Command.Output = runner.console == .stdout ? .file(consoleLog.path, append: false) : .null
            run = try Command(argv, stdout: stdout, stderr: .capture).run(timeout: limit, check: false)
        } catch let e as ProcessError {
            throw LabError.process(e)
        }
        let seconds = Date().timeIntervalSince(start)
        let stderr = run.stderrText
        let console = (try? Data(contentsOf: consoleLog)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        if !stderr.isEmpty, let h = try? FileHandle(forWritingTo: consoleLog) {
            h.seekToEndOfFile()
            h.write(Data("\n[runner stderr] \(stderr)".utf8))
            try? h.close()
        } else if !stderr.isEmpty {
            try? Data("[runner stderr] \(stderr)".utf8).write(to: consoleLog)
        }
        var (markerSeen, failure) = judge(console: console, marker: marker, stderr: stderr, tool: "runner", markerLine: markerLine)
        if !markerSeen, failure == nil, case .exited(let status) = run.termination, status != 0, !run.timedOut {
            failure = "runner exited \(status)"
        }
        return BootResult(markerSeen: markerSeen, timedOut: run.timedOut, exitStatus: run.termination.foundationStatus,
                          seconds: seconds, consoleLogPath: consoleLog.path, failureLine: markerSeen ? nil : failure,
                          commandLine: argv)
    }
}
