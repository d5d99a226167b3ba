import Testing
import Foundation
import TestSupport
import BlockCore
import BackupImage
import Exposure
#if canImport(Glibc)
import Glibc
#endif

/// Real FUSE mounts through `bootlab mount` (a child process), checked with real tools.
@Suite(.serialized) struct FuseMountTests {
    @Test(.requiresFUSE) func servesTheSourcePassesThroughAndDefersOpen() throws {
        let dir = Scratch()
        let disk = try makeDisk(dir.file("base.raw"), seed: 1)
        let back = dir.dir("back"), mnt = dir.dir("mnt")
        try Data("passthrough\n".utf8).write(to: URL(fileURLWithPath: back + "/note.txt"))
        _ = dir.dir("back/sub")
        var rng = Bytes(seed: 2)
        let sub = rng.bytes(100_000)
        try Data(sub).write(to: URL(fileURLWithPath: back + "/sub/blob.bin"))
        let stats = dir.file("stats.json")
        // The reads must reach the source here (FuseSpliceTests covers the kernel reading the file itself).
        var env = ProcessInfo.processInfo.environment
        env["BOOTLAB_FUSE_PASSTHROUGH"] = "off"
        let server = try Server(["mount", back, mnt, "--expose", "disk.raw=" + dir.file("base.raw"), "--stats-file", stats],
                                log: dir.file("mount.log"), environment: env)
        defer { server.stop(); unmount(mnt) }
        #expect(waitFor { isMounted(mnt) }, "mount did not appear: \(server.log)")

        // Metadata without opening the source.
        let attrs = try FileManager.default.attributesOfItem(atPath: mnt + "/disk.raw")
        #expect((attrs[.size] as? NSNumber)?.uint64Value == UInt64(disk.count))
        let info = try run("qemu-img", ["info", "--output=json", "-f", "raw", mnt + "/disk.raw"])
        #expect(info.status == 0 && info.stdout.contains("\"virtual-size\": \(disk.count)"), "\(info.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: mnt).sorted() == ["disk.raw", "note.txt", "sub"])
        server.signal(SIGUSR1)
        #expect(waitFor { readStats(stats)?.sources.first?.name == "disk.raw" })
        #expect(readStats(stats)?.sources.first?.opens == 0, "stat/qemu-img info opened the source")

        // Whole-file content, through cmp and SHA-256.
        #expect(try sha256(ofFile: mnt + "/disk.raw") == SHA256.hash(disk).hex)
        #expect(try run("cmp", [mnt + "/disk.raw", dir.file("base.raw")]).status == 0)
        let cmpOff = try run("qemu-img", ["compare", "-f", "raw", "-F", "raw", mnt + "/disk.raw", dir.file("base.raw")])
        #expect(cmpOff.status == 0, "\(cmpOff.stdout)\(cmpOff.stderr)")

        // Passthrough files, including a write to one.
        #expect(try String(contentsOfFile: mnt + "/note.txt", encoding: .utf8) == "passthrough\n")
        let blob = try [UInt8](Data(contentsOf: URL(fileURLWithPath: mnt + "/sub/blob.bin")))
        let blobDiff = firstDifference(blob, sub)
        #expect(blobDiff == nil)
        let h = try #require(FileHandle(forUpdatingAtPath: mnt + "/note.txt"))
        h.seek(toFileOffset: 0); h.write(Data("PASS".utf8)); h.closeFile()
        #expect(try String(contentsOfFile: back + "/note.txt", encoding: .utf8) == "PASSthrough\n")

        // Without --writable the exposed file refuses writers.
        let w = try run("qemu-io", ["-f", "raw", "-c", "write -P 0x5a 0 4k", mnt + "/disk.raw"])
        #expect(w.status != 0)
        #expect(try sha256(ofFile: dir.file("base.raw")) == SHA256.hash(disk).hex)

        // SIGTERM unmounts cleanly and writes the final statistics.
        #expect(server.stop(SIGTERM) == 0, "\(server.log)")
        #expect(!isMounted(mnt))
        let final = try #require(readStats(stats)?.sources.first)
        #expect(final.opens == 1)
        #expect(final.bytesRead >= UInt64(disk.count))
    }

    @Test(.requiresFUSE) func writesLandInTheOverlayAndSurviveKill9AndRemount() throws {
        let dir = Scratch()
        let disk = try makeDisk(dir.file("base.raw"), seed: 3)
        let baseDigest = try sha256(ofFile: dir.file("base.raw"))
        let back = dir.dir("back"), mnt = dir.dir("mnt")
        let args = ["mount", back, mnt, "--expose", "disk.raw=" + dir.file("base.raw"), "--writable"]
        var model = disk

        do {
            let server = try Server(args, log: dir.file("mount1.log"))
            defer { server.stop(SIGKILL); unmount(mnt) }
            #expect(waitFor { isMounted(mnt) }, "\(server.log)")
            // An aligned write, and an unaligned one straddling overlay units.
            let r = try run("qemu-io", ["-f", "raw", "-c", "write -P 0x5a 1M 64k", "-c", "write -P 0xa5 65000 70001", mnt + "/disk.raw"])
            #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
            model.replaceSubrange((1 << 20)..<((1 << 20) + 65536), with: repeatElement(0x5A, count: 65536))
            model.replaceSubrange(65000..<(65000 + 70001), with: repeatElement(0xA5, count: 70001))
            // qemu-io exited: the writes are acknowledged. Now the server dies without warning.
            #expect(server.stop(SIGKILL) == SIGKILL)
        }
        unmount(mnt)
        #expect(try sha256(ofFile: dir.file("base.raw")) == baseDigest, "the base was written")
        #expect(FileManager.default.fileExists(atPath: back + "/disk.raw.overlay.map"))

        for round in 1...2 {
            let server = try Server(args, log: dir.file("mount-r\(round).log"))
            defer { server.stop(); unmount(mnt) }
            #expect(waitFor { isMounted(mnt) }, "\(server.log)")
            let got = try RawFile(path: mnt + "/disk.raw").read(at: 0, count: model.count)
            let diff = firstDifference(got, model)
            #expect(diff == nil, "round \(round): content after remount differs")
            let v = try run("qemu-io", ["-f", "raw", "-r", "-c", "read -P 0x5a 1M 64k", mnt + "/disk.raw"])
            #expect(v.status == 0 && !v.stdout.contains("Pattern verification failed"), "\(v.stdout)")
            #expect(server.stop(SIGTERM) == 0)
        }
        #expect(try sha256(ofFile: dir.file("base.raw")) == baseDigest)
    }

    /// `mount --page-cache` (keep_cache for read-only exposures): the first read after mounting
    /// (it fills the page cache) and the second (from it) return the bytes a direct_io mount
    /// serves, for a backup's VHDX and for a raw file; a writable exposure on such a mount stays
    /// direct_io, so a write reads back at once.
    @Test(.requiresFUSE) func pageCacheMountsServeTheSameBytesColdAndWarm() throws {
        let dir = Scratch()
        let disk = try makeDisk(dir.file("base.raw"), seed: 5)
        let back = dir.dir("back"), mnt = dir.dir("mnt")
        var o = BackupCreateOptions()
        o.compression = .zstd
        o.imageID = BackupCreateOptions.imageID(seed: "page-cache")
        _ = try BackupImageWriter.create(sourcePath: dir.file("base.raw"), outputPath: back + "/vm.bli", options: o)
        _ = try PluginFile.expose(backupPath: back + "/vm.bli", pluginPath: back + "/vm.vhdx", options: PluginFile.ExposeOptions())
        let expose = ["--expose", "disk.raw=" + dir.file("base.raw")]

        func mounted<T>(_ extra: [String], _ log: String, _ body: () throws -> T) throws -> T {
            let server = try Server(["mount", back, mnt] + expose + extra, log: dir.file(log))
            defer { server.stop(); unmount(mnt) }
            try #require(waitFor { isMounted(mnt) }, "mount did not appear: \(server.log)")
            return try body()
        }
        let reference = try mounted([], "direct.log") { try sha256(ofFile: mnt + "/vm.vhdx") }
        for round in 1...2 {  // a fresh mount each round: the first read is cold
            try mounted(["--page-cache"], "page-cache-\(round).log") {
                #expect(try sha256(ofFile: mnt + "/vm.vhdx") == reference, "round \(round), cold")
                #expect(try sha256(ofFile: mnt + "/vm.vhdx") == reference, "round \(round), warm")
                #expect(try sha256(ofFile: mnt + "/disk.raw") == SHA256.hash(disk).hex, "round \(round), raw cold")
                // Unaligned reads across the cached and the uncached, and the odd tail.
                let f = try RawFile(path: mnt + "/disk.raw")
                for (at, n) in [(4095, 70_001), (1 << 20, 3 << 20), (disk.count - 1500, 1500)] {
                    let got = try f.read(at: UInt64(at), count: n)
                    #expect(firstDifference(got, Array(disk[at..<at + n])) == nil, "round \(round), \(n) bytes at \(at)")
                }
                #expect(try sha256(ofFile: mnt + "/disk.raw") == SHA256.hash(disk).hex, "round \(round), raw warm")
            }
        }
        try mounted(["--page-cache", "--writable", "--overlay-dir", dir.dir("overlays")], "writable.log") {
            #expect(try sha256(ofFile: mnt + "/disk.raw") == SHA256.hash(disk).hex)
            let w = try run("qemu-io", ["-f", "raw", "-c", "write -P 0x3c 8192 4096", mnt + "/disk.raw"])
            #expect(w.status == 0, "\(w.stdout)\(w.stderr)")
            let got = try RawFile(path: mnt + "/disk.raw").read(at: 8192, count: 4096)
            #expect(got == [UInt8](repeating: 0x3C, count: 4096), "a write to a writable exposure did not read back")
        }
        #expect(try sha256(ofFile: dir.file("base.raw")) == SHA256.hash(disk).hex, "the base was written")
    }
}
