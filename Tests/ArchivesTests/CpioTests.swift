import Archives
import BlockCore
import Testing

/// The one newc writer: its bytes are spelled out here from the format (kernel
/// Documentation/driver-api/early-userspace/buffer-format.rst), since the lab's golden digests of
/// generated disks depend on them, and the reader must give back what the writer wrote.
struct CpioTests {
    /// "070701", then 13 fields of 8 upper-case hex digits: ino, mode, uid, gid, nlink, mtime,
    /// filesize, devmajor, devminor, rdevmajor, rdevminor, namesize (with its NUL), check.
    private func header(_ fields: [UInt32]) -> [UInt8] {
        Array("070701".utf8) + fields.flatMap { f -> [UInt8] in
            let hex = String(f, radix: 16, uppercase: true)
            return Array((String(repeating: "0", count: 8 - hex.count) + hex).utf8)
        }
    }

    @Test func bytesOfADirectoryADeviceAFileAndTheTrailer() {
        let bytes = Cpio.write([
            .directory("dev", nlink: 2),
            .characterDevice("dev/console", major: 5, minor: 1),
            .file("init", Array("#!/bin/sh\n".utf8), mode: 0o755),
        ])
        var want: [UInt8] = []
        // 110-byte header + "dev\0" = 114, padded to 116.
        want += header([1, 0o040755, 0, 0, 2, 0, 0, 0, 0, 0, 0, 4, 0]) + Array("dev".utf8) + [0, 0, 0]
        // 110 + "dev/console\0" (12) = 122, padded to 124.
        want += header([2, 0o020600, 0, 0, 1, 0, 0, 0, 0, 5, 1, 12, 0]) + Array("dev/console".utf8) + [0, 0, 0]
        // 110 + "init\0" = 115 → 116; 10 data bytes → 126 → 128 (both counted from the archive's start).
        want += header([3, 0o100755, 0, 0, 1, 0, 10, 0, 0, 0, 0, 5, 0]) + Array("init".utf8) + [0, 0]
        want += Array("#!/bin/sh\n".utf8) + [0, 0]
        // The trailer: inode 0, nlink 1, "TRAILER!!!\0" (11) → 121, padded to 124.
        want += header([0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0]) + Array("TRAILER!!!".utf8) + [0, 0, 0, 0]
        #expect(bytes == want)
    }

    @Test func whatIsWrittenReadsBack() throws {
        let entries: [CpioEntry] = [
            .directory("lib", nlink: 2), .directory("lib/modules"),
            .file("lib/modules/a.ko", (0..<1001).map { UInt8(truncatingIfNeeded: $0) }),
            .symlink("bin/sh", to: "busybox"),
            .characterDevice("dev/null", major: 1, minor: 3, mode: 0o666),
        ]
        let bytes = Cpio.write(entries)
        let (read, end) = try Cpio.read(bytes)
        #expect(read == entries)
        #expect(end == bytes.count)
    }

    @Test func aTruncatedArchiveIsAFormatErrorNotACrash() {
        let bytes = Cpio.write([.file("x", [1, 2, 3])])
        #expect(throws: FormatError.self) { try Cpio.read(Array(bytes.prefix(120))) }
    }
}
