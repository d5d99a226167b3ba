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

    public static func arguments(disk: DiskReference, target: Target) -> [String] {
        var args = ["-accel", "tcg", "-machine", target.machine, "-m", String(target.memoryMiB),
                    "-display", "none", "-monitor", "none"] + (target.nic?.qemuArguments ?? ["-nic", "none"]) + ["-no-reboot"]
        let drive = disk.driveOptions
        args += target.qemuArguments.map { $0.replacingOccurrences(of: "{drive}", with: drive) }
        return args
    }

    /// `markerLine` is the console text that proves the boot (default: the tiny Linux's
    /// `BOOTLAB-MARKER: <marker>`).
    public static func boot(disk: DiskReference, target: Target, marker: String, consoleLog: URL,
                            timeout: Double = defaultTimeout, markerLine: String? = nil) throws -> BootResult {
        let fm = FileManager.default
        try? fm.removeItem(at: consoleLog)
        try fm.createDirectory(at: consoleLog.deletingLastPathComponent(), withIntermediateDirectories: true)
        let args = arguments(disk: disk, target: target) + ["-serial", "file:\(consoleLog.path)"]
        // Past the timeout QEMU gets SIGTERM, then SIGKILL 5 s later; a hung boot is a result here.
        let start = Date()
        let run: Completed
        do {
            run = try Command(["qemu-system-x86_64"] + args, stdout: .null, stderr: .capture).run(timeout: timeout, check: false)
        } catch let e as ProcessError {
            throw LabError.process(e)
        }
        let timedOut = run.timedOut
        let seconds = Date().timeIntervalSince(start)
        let stderr = run.stderrText
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
        let wanted = markerLine ?? Initramfs.markerPrefix + marker
        let markerSeen = lines.contains { $0.contains(wanted) }
        let failure = lines.last { $0.contains("BOOTLAB: root") || $0.contains("BOOTLAB: marker") || $0.contains("Kernel panic") || $0.contains("failed: ") }
            ?? (stderr.isEmpty ? nil : "qemu: " + stderr.split(separator: "\n").first.map(String.init)!)
        return BootResult(markerSeen: markerSeen, timedOut: timedOut, exitStatus: run.termination.foundationStatus,
                          seconds: seconds, consoleLogPath: consoleLog.path, failureLine: markerSeen ? nil : failure,
                          commandLine: ["qemu-system-x86_64"] + args + ["-serial", "file:\(consoleLog.path)"])
    }
}
