import BlockCore
import DiskFormats
import Foundation
import Testing
import TestSupport

/// The FAT32 writer behind the synthesized EFI System Partition, judged by tools we did not write:
/// dosfstools' `fsck.fat -n` (its output text, not only its status), mtools' `mdir`/`mcopy`
/// (files read back byte for byte), util-linux's `blkid -p` (type, version, serial).
@Suite struct FAT32ImageTests {
    static let tools = toolsMissing(["fsck.fat", "mdir", "mcopy", "blkid"])

    static func loader(_ n: Int, seed: UInt64) -> [UInt8] { var b = Bytes(seed: seed); return b.bytes(n) }

    static func files() -> [FAT32Image.File] {
        [.init(path: "/EFI/BOOT/BOOTX64.EFI", bytes: loader(1_234_567, seed: 7)),
         .init(path: "/EFI/BOOT/GRUB.CFG", bytes: Array("search --fs-uuid 1234\n".utf8)),
         .init(path: "/EMPTY.TXT", bytes: []),
         .init(path: "/EFI/BOOTLAB/README.TXT", bytes: Array("synthesized by bootlab\n".utf8))]
    }

    /// Writes the image's data extents into a sparse file.
    static func materialize(_ image: FAT32Image, _ path: String) throws {
        let out = try RawFile.create(path: path, size: image.size)
        for e in try image.allExtents() where e.kind == .data {
            try out.write(at: e.offset, try image.read(at: e.offset, count: Int(e.length)))
        }
        try out.flush()
    }

    /// fsck.fat prints its version line and one summary line for a clean file system; anything
    /// else (a repair it would make, a warning) is a finding.
    static func expectFsckClean(_ path: String) throws {
        let r = try run("fsck.fat", ["-n", "-v", path])
        #expect(r.status == 0, "fsck.fat -n exited \(r.status): \(r.stdout) \(r.stderr)")
        let text = r.stdout + r.stderr
        for bad in ["differ", "wrong", "Free cluster", "Dirty", "invalid", "Invalid", "Warning", "Unable", "bad", "Bad", "Perform changes"] {
            #expect(!text.contains(bad), "fsck.fat -n says '\(bad)': \(text)")
        }
        #expect(text.contains("32 bit entries"), "fsck.fat -v does not see 32-bit FAT entries: \(text)")
        let summary = text.split(separator: "\n").last.map(String.init) ?? ""
        #expect(summary.contains("files,") && summary.contains("clusters"), "no summary line: \(text)")
    }

    @Test(.requires(missing: tools), arguments: [512, 4096])
    func fsckCleanAndMtoolsReadsBack(sectorSize: Int) throws {
        let scratch = Scratch("fat32-\(sectorSize)")
        let size: UInt64 = sectorSize == 512 ? 64 << 20 : 260 << 20
        let image = try FAT32Image(options: .init(size: size, sectorSize: sectorSize, volumeID: 0x1A2B_3C4D,
                                                  label: "EFI", hiddenSectors: 2048), files: Self.files())
        let path = scratch.file("esp.img")
        try Self.materialize(image, path)
        try Self.expectFsckClean(path)

        let env = ["MTOOLS_SKIP_CHECK": "1", "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]
        let dir = try run("mdir", ["-i", path, "-/", "::/"], environment: env)
        #expect(dir.status == 0, "\(dir.stderr)")
        for name in ["BOOTX64  EFI", "GRUB     CFG", "README   TXT", "EMPTY    TXT"] {
            #expect(dir.stdout.contains(name), "mdir -/ lacks \(name): \(dir.stdout)")
        }
        #expect(dir.stdout.contains("Volume in drive : is EFI") || dir.stdout.contains("is EFI"), "\(dir.stdout)")
        for f in Self.files() {
            let out = scratch.file("out-\(f.bytes.count)")
            let cp = try run("mcopy", ["-n", "-i", path, "::" + f.path, out], environment: env)
            #expect(cp.status == 0, "mcopy \(f.path): \(cp.stderr)")
            let back = [UInt8]((try? Data(contentsOf: URL(fileURLWithPath: out))) ?? Data())
            #expect(back == f.bytes, "\(f.path): mcopy read \(back.count) bytes, wrote \(f.bytes.count)")
        }
        let blkid = try run("blkid", ["-p", "-o", "export", path])
        #expect(blkid.stdout.contains("TYPE=vfat"), "\(blkid.stdout)")
        #expect(blkid.stdout.contains("VERSION=FAT32"), "\(blkid.stdout)")
        #expect(blkid.stdout.contains("UUID=1A2B-3C4D"), "\(blkid.stdout)")
        #expect(blkid.stdout.contains("LABEL=EFI"), "\(blkid.stdout)")
    }

    @Test func deterministicAndSparse() throws {
        let a = try FAT32Image(options: .init(size: 64 << 20, volumeID: 1), files: Self.files())
        let b = try FAT32Image(options: .init(size: 64 << 20, volumeID: 1), files: Self.files().reversed())
        let ea = try a.allExtents(), eb = try b.allExtents()
        #expect(ea == eb)
        for e in ea where e.kind == .data {
            #expect(try a.read(at: e.offset, count: Int(e.length)) == b.read(at: e.offset, count: Int(e.length)))
        }
        // Only metadata and the files are data: a 64 MiB ESP holding 1.2 MB is mostly zero extents.
        let data = ea.filter { $0.kind == .data }.reduce(0) { $0 + $1.length }
        #expect(data < 2 << 20, "data extents hold \(data) bytes")
        #expect(a.sectorsPerCluster == 1 && a.clusterCount >= FAT32Image.minimumClusters)
        // A different volume ID changes only the serial field (and its backup copy).
        let c = try FAT32Image(options: .init(size: 64 << 20, volumeID: 2), files: Self.files())
        #expect(try c.read(at: 0, count: 512) != a.read(at: 0, count: 512))
        #expect(try c.read(at: 512 * 32, count: 4096) == a.read(at: 512 * 32, count: 4096))
    }

    @Test func refusals() throws {
        #expect(throws: FAT32Image.WriterError.self) {
            try FAT32Image(options: .init(size: 16 << 20, volumeID: 1), files: [])
        }
        #expect(throws: FAT32Image.WriterError.self) {
            try FAT32Image(options: .init(size: 64 << 20, sectorSize: 4096, volumeID: 1), files: [])
        }
        #expect(throws: FAT32Image.WriterError.name(path: "/efi/boot/bootx64.efi", reason: "'efi' is not an upper-case 8.3 name (this writer stores no long names)")) {
            try FAT32Image(options: .init(size: 64 << 20, volumeID: 1), files: [.init(path: "/efi/boot/bootx64.efi", bytes: [1])])
        }
        #expect(throws: FAT32Image.WriterError.self) {
            try FAT32Image(options: .init(size: 64 << 20, volumeID: 1), files: [.init(path: "/A/B", bytes: [1]), .init(path: "/A", bytes: [2])])
        }
        #expect(throws: FAT32Image.WriterError.doesNotFit(neededClusters: 131_073, availableClusters: 129_022)) {
            try FAT32Image(options: .init(size: 64 << 20, volumeID: 1), files: [.init(path: "/BIG.BIN", bytes: [UInt8](repeating: 1, count: 64 << 20))])
        }
        #expect(FAT32Image.minimumSize(sectorSize: 512) == 34 << 20 || FAT32Image.minimumSize(sectorSize: 512) == 33 << 20)
    }
}
