import Testing
import Foundation
import TestSupport
import BlockCore
import Frontends
#if canImport(Glibc)
import Glibc
#endif

/// Reads of file-backed exposures are spliced from the file to the reader (the shim's own reply
/// path, `FuseMount.SpliceMode`): the bytes must be the file's for every shape of read, and the
/// path must really be taken (`fileBackedReads` in the statistics; zero with splicing off).
@Suite(.serialized) struct FuseSpliceTests {
    /// Random unaligned ranges, reads larger than one request, the odd tail and a hole, through
    /// `bootlab mount --expose` (a child process, as users run it), with splicing on and off.
    @Test(.requiresFUSE) func splicedReadsOfAnExposedRawFileAreTheFileBytes() throws {
        let dir = Scratch()
        let disk = try makeDisk(dir.file("base.raw"), seed: 41, dataBytes: 5 << 20, size: (9 << 20) + 777)
        let back = dir.dir("back"), mnt = dir.dir("mnt")
        for mode in ["own", "libfuse", "off"] {
            let stats = dir.file("stats-\(mode).json")
            // Passthrough off: else the kernel reads the file and no read reaches us.
            let server = try mountExposedRaw(dir, back: back, mnt: mnt, stats: stats, tag: mode, splice: mode, passthrough: false)
            defer { server.stop(); unmount(mnt) }
            #expect(try sha256(ofFile: mnt + "/disk.raw") == SHA256.hash(disk).hex, "\(mode): whole file")
            let f = try RawFile(path: mnt + "/disk.raw")
            let ranges = [(0, 1), (4095, 2), (1 << 20, 1 << 20), ((1 << 20) - 1, (3 << 20) + 3), (disk.count - 777, 777),
                          (disk.count - 5000, 5000), ((5 << 20) - 100, 200)]  // the last across data and hole
                + randomRanges(seed: 42, count: 60, size: disk.count, longest: 3 << 20)
            for (at, n) in ranges {
                let got = try f.read(at: UInt64(at), count: n)
                #expect(firstDifference(got, Array(disk[at..<at + n])) == nil, "\(mode): \(n) bytes at \(at)")
            }
            server.signal(SIGUSR1)
            try #require(waitFor { (readStats(stats)?.sources.first?.reads ?? 0) > 0 }, "\(server.log)")
            let s = try #require(readStats(stats)?.sources.first)
            if mode == "off" {
                #expect(s.fileBackedReads == 0, "splicing off still named the file")
            } else {
                // Every read of this exposure is file-backed, and counted as a read too.
                #expect(s.fileBackedReads > 0 && s.fileBackedReads == s.reads, "\(mode): \(s)")
                #expect(s.fileBackedBytes == s.bytesRead && s.bytesRead >= UInt64(disk.count), "\(mode): \(s)")
            }
            #expect(server.stop(SIGTERM) == 0, "\(server.log)")
        }
    }

    /// An exposed raw file (one file's bytes at the same offsets) is opened in FUSE passthrough:
    /// the kernel reads the file itself. The bytes must be the file's for every shape of read
    /// (pread, unaligned, past the end, mmap), no read may reach the process (`reads` stays 0,
    /// `passthroughOpens` counts the opens), and with `BOOTLAB_FUSE_PASSTHROUGH=off` the same
    /// reads arrive as spliced reads again (the switch is real).
    @Test(.requiresFUSE, .requires(missing: passthroughMissing())) func anExposedRawFileIsReadByTheKernelItself() throws {
        let dir = Scratch()
        let disk = try makeDisk(dir.file("base.raw"), seed: 45, dataBytes: 3 << 20, size: (6 << 20) + 1234)
        let back = dir.dir("back"), mnt = dir.dir("mnt")
        for passthrough in [true, false] {
            let stats = dir.file("stats-\(passthrough).json")
            let server = try mountExposedRaw(dir, back: back, mnt: mnt, stats: stats, tag: "\(passthrough)", splice: nil, passthrough: passthrough)
            defer { server.stop(); unmount(mnt) }
            #expect(try sha256(ofFile: mnt + "/disk.raw") == SHA256.hash(disk).hex, "passthrough \(passthrough): whole file")
            let f = try RawFile(path: mnt + "/disk.raw")
            let ranges = [(0, 1), (4095, 2), (disk.count - 1234, 1234), ((3 << 20) - 7, 14)]
                + randomRanges(seed: 46, count: 40, size: disk.count, longest: 2 << 20)
            for (at, n) in ranges {
                let got = try f.read(at: UInt64(at), count: n)
                #expect(firstDifference(got, Array(disk[at..<at + n])) == nil, "passthrough \(passthrough): \(n) bytes at \(at)")
            }
            // Past the end: nothing (the backing file is exactly as long as the exposed one).
            var byte: UInt8 = 0
            let fd = open(mnt + "/disk.raw", O_RDONLY)
            try #require(fd >= 0)
            #expect(pread(fd, &byte, 1, off_t(disk.count)) == 0)
            // O_DIRECT (QEMU's cache=none) reads the same bytes: in passthrough the backing file's
            // own direct I/O rules apply (aligned buffer and offset).
            let dfd = open(mnt + "/disk.raw", O_RDONLY | 0o40000)  // O_DIRECT (x86_64; Glibc hides it without _GNU_SOURCE)
            guard dfd >= 0 else { Issue.record("O_DIRECT open: \(String(cString: strerror(errno)))"); return }
            var aligned: UnsafeMutableRawPointer? = nil
            try #require(posix_memalign(&aligned, 4096, 65536) == 0)
            defer { free(aligned); close(dfd) }
            #expect(pread(dfd, aligned, 65536, off_t(1 << 20)) == 65536, "O_DIRECT read: \(String(cString: strerror(errno)))")
            #expect(firstDifference(Array(UnsafeRawBufferPointer(start: aligned, count: 65536)), Array(disk[(1 << 20)..<(1 << 20) + 65536])) == nil, "O_DIRECT bytes")
            // Mapped reads go to the same bytes (passthrough only: a direct_io file refuses a shared map).
            if passthrough {
                let map = mmap(nil, disk.count, PROT_READ, MAP_SHARED, fd, 0)
                try #require(map != MAP_FAILED, "mmap: \(String(cString: strerror(errno)))")
                let mapped = UnsafeRawBufferPointer(start: map, count: disk.count)
                #expect(firstDifference(Array(mapped[(1 << 20)..<(1 << 20) + 65536]), Array(disk[(1 << 20)..<(1 << 20) + 65536])) == nil, "mmap")
                munmap(map, disk.count)
            }
            close(fd)
            // A read-only exposure stays read-only.
            #expect(open(mnt + "/disk.raw", O_RDWR) < 0 && errno == EACCES)
            server.signal(SIGUSR1)
            try #require(waitFor { let s = readStats(stats)?.sources.first; return (s?.opens ?? 0) + (s?.passthroughOpens ?? 0) > 0 }, "\(server.log)")
            let s = try #require(readStats(stats)?.sources.first)
            if passthrough {
                // The source never opened: the kernel read the file for every open.
                #expect(s.passthroughOpens >= 3 && s.opens == 0 && s.reads == 0, "the kernel did not take the reads: \(s)")
            } else {
                #expect(s.passthroughOpens == 0 && s.fileBackedReads > 0 && s.fileBackedReads == s.reads, "\(s)")
            }
            #expect(server.stop(SIGTERM) == 0, "\(server.log)")
        }
    }

    /// A source whose bytes are partly a file's: a synthesized head (not file-backed: reads
    /// touching it take the copy path), the file's bytes, then a zero tail (spliced file pages
    /// and zeros from memory in one reply). Served in this process, counted.
    @Test(.requiresFUSE) func readsAcrossFileBackedAndOtherBytesAreExact() throws {
        let dir = Scratch()
        let fileBytes = try makeDisk(dir.file("part.raw"), seed: 43, dataBytes: 2 << 20, size: (3 << 20) + 4001)
        let head = 70_000, tail = (2 << 20) + 123
        let source = HeadFileTail(head: head, file: try RawFile(path: dir.file("part.raw")), tail: UInt64(tail))
        var model = [UInt8](repeating: 0, count: head + fileBytes.count + tail)
        for i in 0..<head { model[i] = UInt8(truncatingIfNeeded: i &* 31 &+ 7) }
        model.replaceSubrange(head..<head + fileBytes.count, with: fileBytes)
        #expect(firstDifference(try source.read(at: 0, count: model.count), model) == nil, "the test source itself")

        let counters = SourceCounters(name: "mixed.raw")
        let counted = CountingSource(source, counters: counters)
        let back = dir.dir("back"), mnt = dir.dir("mnt")
        var o = FuseMount.Options()
        o.splice = .own
        o.fileBackedExposures = true
        o.extraNames = ["mixed.raw"]
        let mount = FuseMount(mountpoint: mnt, backingDirectory: back, options: o) { path in
            path == "mixed.raw" ? ExposedFile(source: counted) : nil
        }
        let ended = DispatchSemaphore(value: 0)
        Thread.detachNewThread { try? mount.run(); ended.signal() }
        defer { unmount(mnt); _ = ended.wait(timeout: .now() + 20) }
        try #require(waitFor { isMounted(mnt) }, "in-process mount did not appear")

        let f = try RawFile(path: mnt + "/mixed.raw")
        #expect(f.size == UInt64(model.count))
        let fileEnd = head + fileBytes.count
        var ranges = [(0, model.count), (head - 10, 20), (head, 4096), (head - 4096, 1 << 20), (fileEnd - 4096, 8192),
                      (fileEnd - 1, 2), (fileEnd - 100_000, 1 << 20), (model.count - 10, 10)]
        var rng = Bytes(seed: 44)
        for _ in 0..<60 {
            let at = Int(rng.next() % UInt64(model.count))
            ranges.append((at, 1 + Int(rng.next() % UInt64(min(2 << 20, model.count - at)))))
        }
        for (at, n) in ranges {
            let got = try f.read(at: UInt64(at), count: n)
            #expect(firstDifference(got, Array(model[at..<at + n])) == nil, "\(n) bytes at \(at)")
        }
        let s = counters.snapshot
        // Not one file's bytes end to end: never handed to the kernel (its reads must reach us).
        #expect(mount.passthroughOpens == 0 && s.passthroughOpens == 0, "\(s)")
        #expect(s.fileBackedReads > 0, "no read was answered from the file: \(s)")
        #expect(s.fileBackedReads < s.reads, "reads touching the synthesized head must take the copy path: \(s)")
    }
}

/// `bootlab mount --expose disk.raw=<dir>/base.raw` with statistics, in the given splice mode
/// (nil: the default) and with FUSE passthrough on or off; returns once mounted.
private func mountExposedRaw(_ dir: Scratch, back: String, mnt: String, stats: String, tag: String,
                             splice: String?, passthrough: Bool) throws -> Server {
    var env = ProcessInfo.processInfo.environment
    env["BOOTLAB_FUSE_SPLICE"] = splice
    env["BOOTLAB_FUSE_PASSTHROUGH"] = passthrough ? nil : "off"
    let server = try Server(["mount", back, mnt, "--expose", "disk.raw=" + dir.file("base.raw"), "--stats-file", stats],
                            log: dir.file("mount-\(tag).log"), environment: env)
    let mounted = waitFor { isMounted(mnt) }
    guard mounted else {
        server.stop()
        throw MountDidNotAppear(log: server.log)
    }
    return server
}

private struct MountDidNotAppear: Error, CustomStringConvertible {
    let log: String
    var description: String { "mount did not appear: \(log)" }
}

/// `count` random (offset, length) reads within `size` bytes, each at most `longest` long.
private func randomRanges(seed: UInt64, count: Int, size: Int, longest: Int) -> [(Int, Int)] {
    var rng = Bytes(seed: seed)
    return (0..<count).map { _ in
        let at = Int(rng.next() % UInt64(size))
        return (at, 1 + Int(rng.next() % UInt64(min(longest, size - at))))
    }
}

/// Why this machine cannot show FUSE passthrough (nil when it can): Linux >= 6.9 (protocol 7.40)
/// and CAP_SYS_ADMIN (FUSE_DEV_IOC_BACKING_OPEN requires it).
private func passthroughMissing() -> String? {
    var u = utsname()
    uname(&u)
    let release = withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    let parts = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
    var missing: [String] = []
    if parts.count < 2 || (parts[0], parts[1]) < (6, 9) { missing.append("FUSE passthrough (Linux >= 6.9; this is \(release))") }
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let capEff = status.split(separator: "\n").first { $0.hasPrefix("CapEff:") }.flatMap { UInt64($0.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16) } ?? 0
    if capEff & (1 << 21) == 0 { missing.append("CAP_SYS_ADMIN (FUSE_DEV_IOC_BACKING_OPEN)") }
    return missing.isEmpty ? nil : missing.joined(separator: ", ")
}

/// `head` synthesized bytes, then a file's bytes, then `tail` zeros; only the last two are
/// file-backed (a `PaddedSource` behind a synthesized header, in miniature).
private struct HeadFileTail: FileBackedSource {
    let head: Int
    let file: RawFile
    let tail: UInt64
    var size: UInt64 { UInt64(head) + file.size + tail }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        for i in 0..<buffer.count {
            let p = offset + UInt64(i)
            if p < UInt64(head) { buffer[i] = UInt8(truncatingIfNeeded: Int(p) &* 31 &+ 7) }
        }
        let h = UInt64(head)
        let lo = max(offset, h), hi = min(offset + UInt64(buffer.count), h + file.size)
        if lo < hi {
            try file.read(at: lo - h, into: UnsafeMutableRawBufferPointer(rebasing: buffer[Int(lo - offset)..<Int(hi - offset)]))
        }
        let z = max(offset, h + file.size)
        if z < offset + UInt64(buffer.count) {
            UnsafeMutableRawBufferPointer(rebasing: buffer[Int(z - offset)...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    func fileSpans(in range: Range<UInt64>) -> [FileSpan]? {
        let h = UInt64(head)
        guard range.lowerBound >= h, range.upperBound <= size else { return nil }
        var out: [FileSpan] = []
        let fileEnd = h + file.size
        if range.lowerBound < fileEnd {
            let hi = min(range.upperBound, fileEnd)
            out.append(.file(fd: file.fd, offset: range.lowerBound - h, length: hi - range.lowerBound))
        }
        let z = max(range.lowerBound, fileEnd)
        if z < range.upperBound { out.append(.zeros(length: range.upperBound - z)) }
        return out
    }
}
