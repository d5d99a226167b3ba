import Testing
import Foundation
import TestSupport
import BlockCore
import BackupImage
import Exposure
#if canImport(Glibc)
import Glibc
#endif

// Offsets as typed constants: literal arithmetic inside interpolations and ranges makes the type
// checker crawl.
private let mib: Int = 1 << 20
private let zeroBlockWrite: Int = 12 * mib         // aligned 64 KiB into a ZERO block
private let unalignedWrite: Int = 17 * mib + 1000  // 3000 bytes into another ZERO block
private let dataBlockWrite: Int = 2 * mib + 512    // 1 KiB into a block holding backup data

private func fill(_ a: inout [UInt8], _ at: Int, _ count: Int, _ byte: UInt8) {
    a.replaceSubrange(at..<(at + count), with: repeatElement(byte, count: count))
}

private func fileSize(_ path: String) -> UInt64? {
    var st = stat()
    return stat(path, &st) == 0 ? UInt64(st.st_size) : nil
}

/// errno of truncate(2), 0 on success.
private func truncateErrno(_ path: String, _ size: UInt64) -> Int32 {
    truncate(path, off_t(size)) == 0 ? 0 : errno
}

/// A plugin file over a real backup: `back/vm.bli` (from a 24 MiB raw disk with an MBR, data at
/// 1–3 MiB and 20 MiB, zeros elsewhere) and `back/vm.vhdx` (1 MiB VHDX blocks, so most of the disk
/// is ZERO blocks a writer must allocate by growing the file).
private struct PluginFixture {
    let disk: [UInt8]
    let back: String
    var plugin: String { back + "/vm.vhdx" }
    var backup: String { back + "/vm.bli" }
    let pluginSize: UInt64

    init(_ dir: Scratch) throws {
        let size: Int = 24 * mib
        var disk = [UInt8](repeating: 0, count: size)
        var rng = Bytes(seed: 41)
        let first: [UInt8] = rng.bytes(2 * mib), second: [UInt8] = rng.bytes(4096)
        disk.replaceSubrange(mib..<(3 * mib), with: first)
        disk.replaceSubrange((20 * mib)..<(20 * mib + 4096), with: second)
        // MBR: one bootable Linux partition at LBA 2048 (entry 1 at 446, signature 55AA at 510).
        disk[446] = 0x80
        disk[450] = 0x83
        let sectors = UInt32(size / 512 - 2048)
        disk.putLE32(2048, at: 454)
        disk.putLE32(sectors, at: 458)
        disk[510] = 0x55
        disk[511] = 0xAA
        let raw = dir.file("disk.raw")
        let f = try RawFile.create(path: raw, size: UInt64(size))
        try f.write(at: 0, disk)
        try f.flush()
        self.disk = disk
        back = dir.dir("back")

        var o = BackupCreateOptions()
        o.imageID = BackupCreateOptions.imageID(seed: "grow")
        o.blockSize = 64 << 10
        _ = try BackupImageWriter.create(sourcePath: raw, outputPath: back + "/vm.bli", options: o)
        var e = PluginFile.ExposeOptions()
        e.blockSize = 1 << 20
        let report = try PluginFile.expose(backupPath: back + "/vm.bli", pluginPath: back + "/vm.vhdx", options: e)
        pluginSize = report.vhdxFileSize
        #expect(report.composition == "disk")
        #expect(report.allocatedBlocks < 8, "most of the disk should be ZERO blocks")
    }

    /// The original disk with the given writes applied, also written to `path` as a raw image.
    func expected(_ writes: [(at: Int, count: Int, byte: UInt8)], path: String) throws -> [UInt8] {
        var out = disk
        for w in writes { fill(&out, w.at, w.count, w.byte) }
        try Data(out).write(to: URL(fileURLWithPath: path))
        return out
    }
}

/// A VHDX writer (QEMU's block driver, through qemu-io) allocating blocks in an exposed plugin
/// file: the file grows through the overlay, and everything survives kill -9 and remounts.
@Suite(.serialized) struct GrowableVHDXTests {
    @Test(.requiresFUSE) func qemuIOAllocatesBlocksThroughTheMountAndTheyPersist() throws {
        let dir = Scratch()
        let fx = try PluginFixture(dir)
        let backupDigest = try sha256(ofFile: fx.backup)
        let pluginDigest = try sha256(ofFile: fx.plugin)
        let mnt = dir.dir("mnt")
        let exposed = mnt + "/vm.vhdx"
        let args = ["mount", fx.back, mnt, "--writable"]
        // What the writer puts in two ZERO blocks (aligned and unaligned) and in a data block.
        let expectedPath = dir.file("expected.raw")
        _ = try fx.expected([(zeroBlockWrite, 65536, 0x5A), (unalignedWrite, 3000, 0xA5), (dataBlockWrite, 1024, 0x3C)],
                            path: expectedPath)
        let twoBlocks = UInt64(2 * mib)
        var grownSize: UInt64 = 0

        do {
            let server = try Server(args, log: dir.file("mount1.log"))
            defer { server.stop(SIGKILL); unmount(mnt) }
            #expect(waitFor { isMounted(mnt) }, "mount did not appear: \(server.log)")
            #expect(fileSize(exposed) == fx.pluginSize)

            let w = try run("qemu-io", ["-f", "vhdx",
                                        "-c", "write -P 0x5a \(zeroBlockWrite) 64k",
                                        "-c", "write -P 0xa5 \(unalignedWrite) 3000",
                                        "-c", "write -P 0x3c \(dataBlockWrite) 1024", exposed])
            let wrote = w.status == 0 && !w.stdout.contains("failed")
            #expect(wrote, "\(w.stdout)\(w.stderr)\n\(server.log)")
            // QEMU allocated two payload blocks at the end of the file.
            grownSize = fileSize(exposed) ?? 0
            #expect(grownSize == fx.pluginSize + twoBlocks, "size \(grownSize), plugin \(fx.pluginSize)")

            let r = try run("qemu-io", ["-f", "vhdx", "-r", "-c", "read -P 0x5a \(zeroBlockWrite) 64k",
                                        "-c", "read -P 0xa5 \(unalignedWrite) 3000", exposed])
            let readBack = r.status == 0 && !r.stdout.contains("verification failed")
            #expect(readBack, "\(r.stdout)\(r.stderr)")
            let check = try run("qemu-img", ["check", "-f", "vhdx", exposed])
            #expect(check.status == 0, "\(check.stdout)\(check.stderr)")

            // Sizes a writer may not set: below the plugin's own bytes, past the growth limit.
            #expect(truncateErrno(exposed, fx.pluginSize - 1) == EPERM)
            #expect(truncateErrno(exposed, 1 << 40) == EFBIG)
            #expect(server.log.contains("growth limit"), "a refused growth is reported: \(server.log)")
            #expect(fileSize(exposed) == grownSize)

            // qemu-io has exited: every write is acknowledged. The server dies without warning.
            #expect(server.stop(SIGKILL) == SIGKILL)
        }
        unmount(mnt)
        #expect(try sha256(ofFile: fx.backup) == backupDigest, "the backup was written")
        #expect(try sha256(ofFile: fx.plugin) == pluginDigest, "the plugin file was written")
        #expect(fileSize(fx.plugin) == fx.pluginSize)
        #expect(try WriteOverlay.recordedSize(path: fx.back + "/vm.vhdx.overlay") == grownSize)

        for round in 1...2 {
            let server = try Server(args, log: dir.file("mount-r\(round).log"))
            defer { server.stop(); unmount(mnt) }
            #expect(waitFor { isMounted(mnt) }, "\(server.log)")
            // The grown size is known before the source opens (from the overlay's journal).
            #expect(fileSize(exposed) == grownSize, "round \(round)")
            let cmp = try run("qemu-img", ["compare", "-f", "vhdx", "-F", "raw", exposed, expectedPath])
            let identical = cmp.status == 0 && cmp.stdout.contains("identical")
            #expect(identical, "round \(round): \(cmp.stdout)\(cmp.stderr)")
            let r = try run("qemu-io", ["-f", "vhdx", "-r", "-c", "read -P 0x5a \(zeroBlockWrite) 64k", exposed])
            let readBack = r.status == 0 && !r.stdout.contains("verification failed")
            #expect(readBack, "\(r.stdout)\(r.stderr)")
            let check = try run("qemu-img", ["check", "-f", "vhdx", exposed])
            #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
            #expect(server.stop(SIGTERM) == 0, "\(server.log)")
        }
        #expect(try sha256(ofFile: fx.backup) == backupDigest)
        #expect(try sha256(ofFile: fx.plugin) == pluginDigest)

        // Read-only mounts keep refusing: no growth, no writes.
        let ro = try Server(["mount", fx.back, mnt], log: dir.file("mount-ro.log"))
        defer { ro.stop(); unmount(mnt) }
        #expect(waitFor { isMounted(mnt) }, "\(ro.log)")
        #expect(truncateErrno(exposed, fx.pluginSize + twoBlocks * 4) == EACCES)
        let w = try run("qemu-io", ["-f", "vhdx", "-c", "write -P 0x11 5M 64k", exposed])
        #expect(w.status != 0)
        #expect(fileSize(exposed) == fx.pluginSize, "a read-only mount serves the plugin without its overlay")
    }

    /// NBD exports cannot grow, so a VHDX writer over NBD writes into a qcow2 overlay whose
    /// backing file is the NBD-served VHDX (the documented route).
    @Test(.requiresNBD) func qcow2OverlayOverTheNBDServedVHDXTakesTheWrites() throws {
        let dir = Scratch()
        let fx = try PluginFixture(dir)
        let backupDigest = try sha256(ofFile: fx.backup)
        let pluginDigest = try sha256(ofFile: fx.plugin)
        let expectedPath = dir.file("expected.raw")
        _ = try fx.expected([(zeroBlockWrite, 65536, 0x5A)], path: expectedPath)

        let socket = dir.file("s.sock")
        let server = try Server(["serve", fx.plugin, "--socket", socket], log: dir.file("serve.log"))
        defer { server.stop() }
        #expect(waitForNBD(socket), "\(server.log)")
        let ov = dir.file("ov.qcow2")
        let backing = "json:{\"driver\":\"vhdx\",\"file\":{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"" + socket + "\"}}}"
        let c = try run("qemu-img", ["create", "-f", "qcow2", "-b", backing, "-F", "vhdx", ov])
        #expect(c.status == 0, "\(c.stdout)\(c.stderr)")
        let w = try run("qemu-io", ["-f", "qcow2", "-c", "write -P 0x5a \(zeroBlockWrite) 64k", ov])
        let wrote = w.status == 0 && !w.stdout.contains("failed")
        #expect(wrote, "\(w.stdout)\(w.stderr)")
        let r = try run("qemu-io", ["-f", "qcow2", "-r", "-c", "read -P 0x5a \(zeroBlockWrite) 64k", ov])
        let readBack = r.status == 0 && !r.stdout.contains("verification failed")
        #expect(readBack, "\(r.stdout)\(r.stderr)")
        let cmp = try run("qemu-img", ["compare", "-f", "qcow2", "-F", "raw", ov, expectedPath])
        let identical = cmp.status == 0 && cmp.stdout.contains("identical")
        #expect(identical, "\(cmp.stdout)\(cmp.stderr)")
        // The overlay holds the written range (depth 0); everything else comes from the backing VHDX.
        let map = try run("qemu-img", ["map", "-f", "qcow2", "--output=json", ov])
        let top: [String] = map.stdout.split(separator: "\n").map(String.init).filter { $0.contains("\"depth\": 0") }
        let startField = "\"start\": \(zeroBlockWrite),"
        let onlyTheWrite = top.count == 1 && top[0].contains(startField) && top[0].contains("\"length\": 65536,")
        #expect(onlyTheWrite, "\(map.stdout)")
        #expect(server.stop(SIGTERM) == 0, "\(server.log)")
        #expect(try sha256(ofFile: fx.backup) == backupDigest)
        #expect(try sha256(ofFile: fx.plugin) == pluginDigest)

        // The same writer straight on a writable export fails: NBD cannot grow the VHDX file to
        // allocate the block.
        let rw = try Server(["serve", fx.plugin, "--socket", socket, "--overlay", dir.file("nbd.overlay")],
                            log: dir.file("serve-rw.log"))
        defer { rw.stop() }
        #expect(waitForNBD(socket), "\(rw.log)")
        let direct = try run("qemu-io", ["-f", "vhdx", "-c", "write -P 0x5a \(zeroBlockWrite) 64k", uri(socket)])
        let failed = direct.status != 0 && direct.stdout.contains("failed")
        #expect(failed, "\(direct.stdout)\(direct.stderr)")
        #expect(rw.stop(SIGTERM) == 0, "\(rw.log)")
        #expect(try sha256(ofFile: fx.backup) == backupDigest)
    }
}
