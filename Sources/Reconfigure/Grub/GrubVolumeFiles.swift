import BlockCore
import Foundation
import Processes

/// Read-only access to the few things GRUB boot-code regeneration needs from the volume that
/// holds `/boot/grub`: whether a file exists, a copy of one directory, and the file system's
/// UUID and type. Two implementations: a raw volume image read with e2fsprogs (`debugfs`,
/// `blkid -p`; no mount, no loop device) and a partition inside a libguestfs appliance.
protocol GrubVolumeFiles {
    /// How the volume is named in messages and reports.
    var name: String { get }
    func isFile(_ path: String) throws -> Bool
    /// Copies the regular files directly inside `path` into the host directory `destination`
    /// (created if missing).
    func copyDirectory(_ path: String, to destination: URL) throws
    func filesystemUUID() throws -> String
    /// `blkid`'s / libguestfs' name: ext2, ext3, ext4, xfs, btrfs, vfat, …
    func filesystemType() throws -> String
}

/// A raw ext2/3/4 volume image, read with `debugfs` and `blkid -p`.
struct RawVolumeFiles: GrubVolumeFiles {
    let path: String
    var name: String { path }

    func isFile(_ file: String) throws -> Bool {
        // debugfs reports a missing path on stderr and still exits 0; stat's "Type:" line is the answer.
        let out = try Command(["debugfs", "-R", "stat \"\(file)\"", path]).run().stdoutText
        return out.contains("Type: regular")
    }

    func copyDirectory(_ dir: String, to destination: URL) throws {
        let parent = destination.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: parent, withIntermediateDirectories: true)
        let staging = parent.appendingPathComponent("rdump-\(destination.lastPathComponent)")
        try? FileManager.default.removeItem(at: staging)
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: staging) }
        try Command(["debugfs", "-R", "rdump \"\(dir)\" \"\(staging.path)\"", path]).run()
        // rdump recreates the directory under its own name inside the target.
        let dumped = staging.appendingPathComponent((dir as NSString).lastPathComponent)
        guard FileManager.default.fileExists(atPath: dumped.path) else {
            throw GrubError.volume("debugfs could not copy \(dir) out of \(path)")
        }
        try? FileManager.default.removeItem(at: destination)
        try FileManager.default.moveItem(at: dumped, to: destination)
    }

    func filesystemUUID() throws -> String {
        try Command(["blkid", "-p", "-o", "value", "-s", "UUID", path]).run().stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func filesystemType() throws -> String {
        try Command(["blkid", "-p", "-o", "value", "-s", "TYPE", path]).run().stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// One partition inside a running libguestfs appliance; the caller has mounted it read-only at `/`.
struct GuestfsVolumeFiles: GrubVolumeFiles {
    let g: Guestfs
    let device: String
    /// Where the tar stream goes on the host.
    let scratch: String
    var name: String { device }

    func isFile(_ path: String) throws -> Bool { try g.isFile(path) }

    func copyDirectory(_ dir: String, to destination: URL) throws {
        try? FileManager.default.removeItem(at: destination)
        try FileManager.default.createDirectory(at: destination, withIntermediateDirectories: true)
        try g.tarOut(dir, to: scratch)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        try Command(["tar", "-x", "--no-same-owner", "-f", scratch, "-C", destination.path]).run()
    }

    func filesystemUUID() throws -> String { try g.vfsUUID(device) }
    func filesystemType() throws -> String { try g.vfsType(device) }
}
