import BlockCore
import Foundation

/// A GPT disk of a source machine (or the disk an exposed GPT composition must equal), written by
/// GPT fdisk (`sgdisk`), not by DiskFormats' GPT writer — on purpose, as `MBRImage`: the lab's
/// disks are the oracle `qemu-img compare` holds the exposed disk to, so a bug in the product's GPT
/// code must not be able to appear on both sides. 4096-byte sectors go through a loop device
/// with 4096-byte logical blocks (`losetup -b 4096`; sgdisk assumes 512 on a plain file).
///
/// The layout is sgdisk's default (128 entries of 128 bytes, array at LBA 2, backup at the end),
/// which is what the composition writes for a volume whose backup recorded that shape.
public struct GPTImage: Sendable, Hashable {
    public struct Partition: Sendable, Hashable {
        public var number: Int
        public var firstLBA: UInt64
        public var lastLBA: UInt64
        /// A GUID (`C12A7328-…`) or an sgdisk type code (`EF00`, `8300`).
        public var type: String
        public var uniqueGUID: String
        public var name: String
        /// Attribute bits to set (0 required, 2 legacy BIOS bootable, 48–63 type-specific).
        public var attributeBits: [Int]

        public init(number: Int, firstLBA: UInt64, lastLBA: UInt64, type: String, uniqueGUID: String,
                    name: String = "", attributeBits: [Int] = []) {
            self.number = number
            self.firstLBA = firstLBA
            self.lastLBA = lastLBA
            self.type = type
            self.uniqueGUID = uniqueGUID
            self.name = name
            self.attributeBits = attributeBits
        }
    }

    public var sectorSize: Int
    public var diskGUID: String
    public var partitions: [Partition]

    public init(sectorSize: Int, diskGUID: String, partitions: [Partition]) {
        self.sectorSize = sectorSize
        self.diskGUID = diskGUID
        self.partitions = partitions
    }

    /// sgdisk's arguments for this table.
    var sgdiskArguments: [String] {
        var a = ["-U", diskGUID]
        for p in partitions {
            a += ["-n", "\(p.number):\(p.firstLBA):\(p.lastLBA)", "-t", "\(p.number):\(p.type)", "-u", "\(p.number):\(p.uniqueGUID)"]
            if !p.name.isEmpty { a += ["-c", "\(p.number):\(p.name)"] }
            for bit in p.attributeBits { a += ["-A", "\(p.number):set:\(bit)"] }
        }
        return a
    }

    /// Writes the table (protective MBR, both headers and arrays) onto the raw disk at `path`,
    /// which must exist with its final size; partition contents are not touched.
    public func write(to path: String) throws {
        try Self.withDevice(path, sectorSize: sectorSize) { dev in
            try Shell.run("sgdisk", sgdiskArguments + [dev])
            // sgdisk reports a table it made with problems only through -v.
            let v = try Shell.run("sgdisk", ["-v", dev])
            guard v.stdout.contains("No problems found") else {
                throw LabError.cell("GPT image", reason: "sgdisk -v on the generated disk: \(v.stdout)")
            }
        }
    }

    /// A raw disk at `path` of `size` bytes with this table and `volume` (a raw file) copied into
    /// partition `number` — e.g. the expected disk of a GPT volume relocated to another start.
    public func writeDisk(to path: String, size: UInt64, volume: String, intoPartition number: Int) throws {
        guard let p = partitions.first(where: { $0.number == number }) else {
            throw LabError.cell("GPT image", reason: "no partition \(number)")
        }
        let tmp = path + ".partial"
        let dst = try RawFile.create(path: tmp, size: size)
        try write(to: tmp)
        let src = try RawFile(path: volume)
        guard src.size <= (p.lastLBA - p.firstLBA + 1) * UInt64(sectorSize) else {
            throw LabError.cell("GPT image", reason: "volume of \(src.size) bytes does not fit partition \(number)")
        }
        var done: UInt64 = 0
        while done < src.size {
            let n = Int(min(1 << 20, src.size - done))
            let bytes = try src.read(at: done, count: n)
            if bytes.contains(where: { $0 != 0 }) { try dst.write(at: p.firstLBA * UInt64(sectorSize) + done, bytes) }
            done += UInt64(n)
        }
        try dst.flush()
        guard rename(tmp, path) == 0 else { throw IOError("rename", path: path, errno: errno) }
    }

    /// Runs `body` with a block device of `sectorSize`-byte logical blocks over `file` (the file
    /// itself for 512), detaching the loop device afterwards.
    @discardableResult
    static func withDevice<T>(_ file: String, sectorSize: Int, _ body: (String) throws -> T) throws -> T {
        if sectorSize == 512 { return try body(file) }
        let dev = try Shell.run("losetup", ["-b", String(sectorSize), "-f", "--show", file]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? Shell.run("losetup", ["-d", dev], check: false) }
        return try body(dev)
    }
}
