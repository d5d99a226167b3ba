import BlockCore

/// One member of a "newc" cpio archive (the initramfs format; kernel Documentation/driver-api/early-userspace/buffer-format.rst).
public struct CpioEntry: Sendable, Equatable {
    public var name: String
    public var mode: UInt32
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0
    public var nlink: UInt32 = 1
    public var mtime: UInt32 = 0
    public var devMajor: UInt32 = 0
    public var devMinor: UInt32 = 0
    public var rdevMajor: UInt32 = 0
    public var rdevMinor: UInt32 = 0
    public var data: [UInt8]

    public init(name: String, mode: UInt32, data: [UInt8] = [], mtime: UInt32 = 0) {
        self.name = name
        self.mode = mode
        self.data = data
        self.mtime = mtime
    }

    /// `nlink`: the kernel ignores it for directories; the lab's generator writes 2 (a real
    /// directory's count) and must keep doing so, since its golden digests cover the archive.
    public static func directory(_ name: String, mode: UInt32 = 0o755, nlink: UInt32 = 1) -> CpioEntry {
        var e = CpioEntry(name: name, mode: 0o040000 | mode, data: [])
        e.nlink = nlink
        return e
    }
    public static func file(_ name: String, _ data: [UInt8], mode: UInt32 = 0o644) -> CpioEntry { CpioEntry(name: name, mode: 0o100000 | mode, data: data) }
    public static func symlink(_ name: String, to target: String) -> CpioEntry { CpioEntry(name: name, mode: 0o120777, data: Array(target.utf8)) }
    /// A device node (e.g. /dev/console, 5:1), which the kernel creates while unpacking.
    public static func characterDevice(_ name: String, major: UInt32, minor: UInt32, mode: UInt32 = 0o600) -> CpioEntry {
        var e = CpioEntry(name: name, mode: 0o020000 | mode, data: [])
        e.rdevMajor = major
        e.rdevMinor = minor
        return e
    }

    public var isDirectory: Bool { mode & 0o170000 == 0o040000 }
    public var isRegularFile: Bool { mode & 0o170000 == 0o100000 }
}

/// Reader and writer of "newc" (070701) cpio archives: the one in BootLab, used by the lab's
/// initramfs generator and by reconfiguration's initramfs editor (and fuzzed by FuzzCpio).
///
/// The reader treats its input as untrusted: every field is hex-checked, every size bounded by
/// the bytes that remain, so a corrupt initramfs gives a `FormatError`, never a crash.
public enum Cpio {
    static let magic = Array("070701".utf8)
    static let headerSize = 110
    static let trailer = "TRAILER!!!"
    /// Longest member name we accept (Linux PATH_MAX).
    static let maxName = 4096

    /// Parses one archive starting at `start`; returns its members (without the trailer) and the
    /// offset just past the trailer's padding.
    public static func read(_ bytes: [UInt8], from start: Int = 0) throws -> (entries: [CpioEntry], end: Int) {
        var pos = start
        var out: [CpioEntry] = []
        func fail(_ structure: String, _ reason: String) -> FormatError {
            FormatError("cpio", structure, at: UInt64(pos), reason)
        }
        while true {
            guard bytes.count - pos >= headerSize else { throw fail("header \(out.count)", "truncated: \(bytes.count - pos) bytes left, header needs \(headerSize)") }
            guard Array(bytes[pos..<pos + 6]) == magic else { throw fail("header \(out.count)", "magic is not 070701 (newc)") }
            var fields: [UInt32] = []
            for i in 0..<13 {
                let f = pos + 6 + i * 8
                guard let v = UInt32(String(decoding: bytes[f..<f + 8], as: UTF8.self), radix: 16) else {
                    throw fail("header \(out.count) field \(i)", "not 8 hex digits")
                }
                fields.append(v)
            }
            let fileSize = Int(fields[6]), nameSize = Int(fields[11])
            guard nameSize >= 1, nameSize <= maxName else { throw fail("header \(out.count)", "name size \(nameSize) outside 1...\(maxName)") }
            let nameStart = pos + headerSize
            guard bytes.count - nameStart >= nameSize else { throw fail("header \(out.count)", "name runs past the end") }
            let name = String(decoding: bytes[nameStart..<nameStart + nameSize - 1], as: UTF8.self)
            let dataStart = align4(nameStart + nameSize)
            guard dataStart <= bytes.count, bytes.count - dataStart >= fileSize else {
                throw fail("member \(name)", "data of \(fileSize) bytes runs past the end")
            }
            pos = align4(dataStart + fileSize)
            if name == trailer { return (out, min(pos, bytes.count)) }
            var e = CpioEntry(name: name, mode: fields[1], data: Array(bytes[dataStart..<dataStart + fileSize]), mtime: fields[5])
            e.uid = fields[2]; e.gid = fields[3]; e.nlink = fields[4]
            e.devMajor = fields[7]; e.devMinor = fields[8]; e.rdevMajor = fields[9]; e.rdevMinor = fields[10]
            out.append(e)
        }
    }

    /// Writes members in the given order with inode numbers 1, 2, … (what `cpio --reproducible`
    /// does), then the trailer. Same members, same bytes.
    public static func write(_ entries: [CpioEntry]) -> [UInt8] {
        var out: [UInt8] = []
        var ino: UInt32 = 1
        func header(_ e: CpioEntry, ino: UInt32) {
            let nameBytes = Array(e.name.utf8) + [0]
            let fields: [UInt32] = [ino, e.mode, e.uid, e.gid, e.nlink, e.mtime, UInt32(e.data.count),
                                    e.devMajor, e.devMinor, e.rdevMajor, e.rdevMinor, UInt32(nameBytes.count), 0]
            out += magic
            for f in fields { out += Array(hex8(f).utf8) }
            out += nameBytes
            out += [UInt8](repeating: 0, count: align4(out.count) - out.count)
            out += e.data
            out += [UInt8](repeating: 0, count: align4(out.count) - out.count)
        }
        for e in entries {
            header(e, ino: ino)
            ino += 1
        }
        header(CpioEntry(name: trailer, mode: 0, data: []).with { $0.nlink = 1 }, ino: 0)
        return out
    }

    static func align4(_ n: Int) -> Int { (n + 3) & ~3 }
    static func hex8(_ v: UInt32) -> String {
        let s = String(v, radix: 16, uppercase: true)
        return String(repeating: "0", count: 8 - s.count) + s
    }
}

extension CpioEntry {
    func with(_ f: (inout CpioEntry) -> Void) -> CpioEntry { var c = self; f(&c); return c }
}
