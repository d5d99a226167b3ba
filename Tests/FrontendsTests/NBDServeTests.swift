import Testing
import Foundation
import TestSupport
import BlockCore
#if canImport(Glibc)
import Glibc
#endif

func uri(_ socket: String) -> String { "nbd+unix:///?socket=" + socket }

/// Waits until the NBD server answers on `socket`.
func waitForNBD(_ socket: String) -> Bool {
    waitFor(20) { FileManager.default.fileExists(atPath: socket) && ((try? run("nbdinfo", ["--size", uri(socket)], timeout: 10))?.status == 0) }
}

/// Real NBD serving through `bootlab serve` (which becomes nbdkit with our plugin).
@Suite(.serialized) struct NBDServeTests {
    @Test(.requiresNBD) func servesTheSourceReadOnlyWithExtentsOnA0600Socket() throws {
        #expect(FileManager.default.fileExists(atPath: productsDirectory + "/libbootlab-nbdkit.so"),
                "libbootlab-nbdkit.so missing in \(productsDirectory): run `swift build` first")
        let dir = Scratch()
        let disk = try makeDisk(dir.file("base.raw"), seed: 11)
        let socket = dir.file("s.sock"), stats = dir.file("stats.json")
        let server = try Server(["serve", dir.file("base.raw"), "--socket", socket, "--stats-file", stats], log: dir.file("serve.log"))
        defer { server.stop() }
        // The first statistics are written before any client: nothing opened yet.
        #expect(waitFor { readStats(stats) != nil }, "\(server.log)")
        #expect(readStats(stats)?.sources.first?.opens == 0)
        #expect(waitForNBD(socket), "\(server.log)")

        var st = stat()
        #expect(lstat(socket, &st) == 0)
        #expect((st.st_mode & S_IFMT) == S_IFSOCK)
        #expect(st.st_mode & 0o777 == 0o600, "socket mode \(String(st.st_mode & 0o777, radix: 8))")

        let cmp = try run("qemu-img", ["compare", "-f", "raw", "-F", "raw", dir.file("base.raw"), uri(socket)])
        #expect(cmp.status == 0 && cmp.stdout.contains("identical"), "\(cmp.stdout)\(cmp.stderr)")
        let copy = dir.file("copy.raw")
        let c = try run("nbdcopy", [uri(socket), copy])
        #expect(c.status == 0, "\(c.stderr)")
        #expect(try sha256(ofFile: copy) == SHA256.hash(disk).hex)

        // The sparse middle of the file shows as a hole through block status.
        let map = try run("nbdinfo", ["--map", uri(socket)])
        #expect(map.status == 0 && map.stdout.contains("hole,zero"), "\(map.stdout)")

        let w = try run("qemu-io", ["-f", "raw", "-c", "write -P 0x5a 0 4k", uri(socket)])
        #expect(w.status != 0 || w.stdout.contains("failed"), "a read-only export took a write")

        #expect(server.stop(SIGTERM) == 0, "\(server.log)")
        let final = try #require(readStats(stats)?.sources.first)
        #expect(final.opens == 1)
        #expect(final.bytesRead > 0)
        #expect(try sha256(ofFile: dir.file("base.raw")) == SHA256.hash(disk).hex)
    }

    @Test(.requiresNBD) func writesLandInTheOverlayAndSurviveKill9() throws {
        let dir = Scratch()
        let disk = try makeDisk(dir.file("base.raw"), seed: 12)
        let baseDigest = try sha256(ofFile: dir.file("base.raw"))
        let socket = dir.file("s.sock")
        let args = ["serve", dir.file("base.raw"), "--socket", socket, "--overlay", dir.file("disk.overlay")]
        var model = disk
        do {
            let server = try Server(args, log: dir.file("serve1.log"))
            defer { server.stop(SIGKILL) }
            #expect(waitForNBD(socket), "\(server.log)")
            let r = try run("qemu-io", ["-f", "raw", "-c", "write -P 0x5a 5M 64k", "-c", "write -P 0x33 12345 777", uri(socket)])
            #expect(r.status == 0 && !r.stdout.contains("failed"), "\(r.stdout)\(r.stderr)")
            model.replaceSubrange((5 << 20)..<((5 << 20) + 65536), with: repeatElement(0x5A, count: 65536))
            model.replaceSubrange(12345..<(12345 + 777), with: repeatElement(0x33, count: 777))
            #expect(server.stop(SIGKILL) == SIGKILL)
        }
        #expect(try sha256(ofFile: dir.file("base.raw")) == baseDigest, "the base was written")

        let server = try Server(args, log: dir.file("serve2.log"))
        defer { server.stop() }
        #expect(waitForNBD(socket), "\(server.log)")
        let copy = dir.file("copy.raw")
        let c = try run("nbdcopy", [uri(socket), copy])
        #expect(c.status == 0, "\(c.stderr)")
        let diff = firstDifference(try RawFile(path: copy).read(at: 0, count: model.count), model)
        #expect(diff == nil, "content after restart differs")
        // Written units are data in block status even where the base has a hole.
        let map = try run("nbdinfo", ["--map", uri(socket)])
        #expect(map.stdout.contains("   5242880       65536    0  data"), "\(map.stdout)")
        #expect(server.stop(SIGTERM) == 0)
        #expect(try sha256(ofFile: dir.file("base.raw")) == baseDigest)
    }
}
