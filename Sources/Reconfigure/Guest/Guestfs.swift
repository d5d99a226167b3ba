import CGuestfs
#if canImport(Glibc)
import Glibc
#endif

/// A libguestfs call that failed, with libguestfs' own message.
public struct GuestfsError: Error, CustomStringConvertible, Equatable, Sendable {
    public var operation: String
    public var message: String
    public var description: String { "libguestfs \(operation): \(message)" }
}

/// One libguestfs handle (one appliance). Not thread-safe: libguestfs handles belong to one thread.
///
/// Only the calls reconfiguration needs are wrapped. KVM on this machine kind cannot run the
/// appliance (platform-notes), so the handle forces TCG unless `BOOTLAB_GUESTFS_KVM=1`.
public final class Guestfs {
    private let g: OpaquePointer

    public init() throws {
        guard let h = guestfs_create() else { throw GuestfsError(operation: "create", message: "guestfs_create returned NULL") }
        g = h
        if getenv("BOOTLAB_GUESTFS_KVM").map({ String(cString: $0) }) != "1" {
            try withCStrings(["force_tcg"]) { argv in
                try check("set_backend_settings", guestfs_set_backend_settings(g, argv))
            }
        }
    }

    deinit { guestfs_close(g) }

    // MARK: errors and results

    private func error(_ op: String) -> GuestfsError {
        let msg = guestfs_last_error(g).map { String(cString: $0) } ?? "unknown error"
        return GuestfsError(operation: op, message: msg)
    }

    private func check(_ op: String, _ rc: Int32) throws {
        if rc == -1 { throw error(op) }
    }

    private func string(_ op: String, _ p: UnsafeMutablePointer<CChar>?) throws -> String {
        guard let p else { throw error(op) }
        defer { free(p) }
        return String(cString: p)
    }

    private func strings(_ op: String, _ p: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) throws -> [String] {
        guard let p else { throw error(op) }
        defer { free(p) }
        var out: [String] = []
        var i = 0
        while let s = p[i] {
            out.append(String(cString: s))
            free(s)
            i += 1
        }
        return out
    }

    private func bool(_ op: String, _ rc: Int32) throws -> Bool {
        if rc == -1 { throw error(op) }
        return rc != 0
    }

    // MARK: drives and lifecycle

    /// Adds a disk image. `format` is a QEMU format name ("raw", "qcow2", "vhdx").
    public func addDrive(_ path: String, format: String, readonly: Bool) throws {
        try format.withCString { fmt in
            try "unsafe".withCString { cache in
                var opts = guestfs_add_drive_opts_argv()
                opts.bitmask = CG_ADD_DRIVE_OPTS_FORMAT | CG_ADD_DRIVE_OPTS_READONLY | CG_ADD_DRIVE_OPTS_CACHEMODE
                opts.format = fmt
                opts.readonly = readonly ? 1 : 0
                // "unsafe": the overlay is scratch until we copy it out after a clean shutdown.
                opts.cachemode = cache
                try check("add_drive", guestfs_add_drive_opts_argv(g, path, &opts))
            }
        }
    }

    public func launch() throws { try check("launch", guestfs_launch(g)) }
    public func shutdown() throws { try check("shutdown", guestfs_shutdown(g)) }
    public func sync() throws { try check("sync", guestfs_sync(g)) }

    // MARK: devices and file systems

    public func listDevices() throws -> [String] { try strings("list_devices", guestfs_list_devices(g)) }
    public func listPartitions() throws -> [String] { try strings("list_partitions", guestfs_list_partitions(g)) }

    /// (device, file-system type) pairs, as libguestfs detects them.
    public func listFilesystems() throws -> [(device: String, type: String)] {
        let flat = try strings("list_filesystems", guestfs_list_filesystems(g))
        return stride(from: 0, to: flat.count - 1, by: 2).map { (flat[$0], flat[$0 + 1]) }
    }

    public func vfsUUID(_ device: String) throws -> String { try string("vfs_uuid", guestfs_vfs_uuid(g, device)) }
    public func vfsType(_ device: String) throws -> String { try string("vfs_type", guestfs_vfs_type(g, device)) }

    public func mountReadOnly(_ device: String, at mountpoint: String = "/") throws {
        try check("mount_ro \(device)", guestfs_mount_ro(g, device, mountpoint))
    }

    public func mount(_ device: String, at mountpoint: String = "/") throws {
        try check("mount \(device)", guestfs_mount(g, device, mountpoint))
    }

    public func umountAll() throws { try check("umount_all", guestfs_umount_all(g)) }

    public func pwriteDevice(_ device: String, _ bytes: [UInt8], at offset: UInt64) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBufferPointer { buf -> Int32 in
                let chunk = min(bytes.count - done, 1 << 20)
                return buf.baseAddress!.withMemoryRebound(to: CChar.self, capacity: bytes.count) { p in
                    guestfs_pwrite_device(g, device, p + done, chunk, Int64(offset) + Int64(done))
                }
            }
            if n <= 0 { throw error("pwrite_device \(device)") }
            done += Int(n)
        }
    }

    public func preadDevice(_ device: String, count: Int, at offset: UInt64) throws -> [UInt8] {
        var size = 0
        guard let p = guestfs_pread_device(g, device, Int32(count), Int64(offset), &size) else { throw error("pread_device \(device)") }
        defer { free(p) }
        guard size == count else { throw GuestfsError(operation: "pread_device \(device)", message: "short read: \(size) of \(count) bytes at \(offset)") }
        return p.withMemoryRebound(to: UInt8.self, capacity: size) { Array(UnsafeBufferPointer(start: $0, count: size)) }
    }

    // MARK: files

    /// The real spelling of a path on a case-insensitive guest file system (NTFS, FAT).
    public func caseSensitivePath(_ path: String) throws -> String {
        try string("case_sensitive_path \(path)", guestfs_case_sensitive_path(g, path))
    }

    public func exists(_ path: String) throws -> Bool { try bool("exists \(path)", guestfs_exists(g, path)) }
    public func isFile(_ path: String) throws -> Bool { try bool("is_file \(path)", guestfs_is_file(g, path)) }
    public func isDir(_ path: String) throws -> Bool { try bool("is_dir \(path)", guestfs_is_dir(g, path)) }

    public func readFile(_ path: String) throws -> [UInt8] {
        var size = 0
        guard let p = guestfs_read_file(g, path, &size) else { throw error("read_file \(path)") }
        defer { free(p) }
        return p.withMemoryRebound(to: UInt8.self, capacity: size) { Array(UnsafeBufferPointer(start: $0, count: size)) }
    }

    public func writeFile(_ path: String, _ bytes: [UInt8]) throws {
        // guestfs_write needs a non-NULL pointer even for an empty file.
        let padded = bytes + [0]
        try padded.withUnsafeBufferPointer { buf in
            try buf.withMemoryRebound(to: CChar.self) { c in
                try check("write \(path)", guestfs_write(g, path, c.baseAddress!, bytes.count))
            }
        }
    }

    public func download(_ path: String, to hostPath: String) throws {
        try check("download \(path)", guestfs_download(g, path, hostPath))
    }

    public func upload(_ hostPath: String, to path: String) throws {
        try check("upload \(path)", guestfs_upload(g, hostPath, path))
    }

    /// Writes a tar archive of `dir` (uncompressed) to `hostPath`.
    public func tarOut(_ dir: String, to hostPath: String) throws {
        var opts = guestfs_tar_out_opts_argv()
        opts.bitmask = 0
        try check("tar_out \(dir)", guestfs_tar_out_opts_argv(g, dir, hostPath, &opts))
    }

    /// Every path below `dir`, relative to it (guestfs_find).
    public func find(_ dir: String) throws -> [String] { try strings("find \(dir)", guestfs_find(g, dir)) }
    public func ls(_ dir: String) throws -> [String] { try strings("ls \(dir)", guestfs_ls(g, dir)) }
    public func mkdirP(_ path: String) throws { try check("mkdir_p \(path)", guestfs_mkdir_p(g, path)) }

    /// Runs a command inside the mounted guest (chroot), e.g. update-initramfs.
    public func command(_ argv: [String]) throws -> String {
        try withCStrings(argv) { a in try string("command \(argv.joined(separator: " "))", guestfs_command(g, a)) }
    }
}

/// Calls `body` with a NULL-terminated C string array.
func withCStrings<R>(_ strings: [String], _ body: (UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) throws -> R) rethrows -> R {
    var ptrs: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    ptrs.append(nil)
    defer { for p in ptrs { free(p) } }
    return try ptrs.withUnsafeMutableBufferPointer { try body($0.baseAddress!) }
}
