import Foundation

/// A `newc` cpio archive (the initramfs format, linux/Documentation/driver-api/early-userspace/
/// buffer-format.rst) written with fixed inode numbers, owners and times so equal inputs give
/// equal bytes.
struct CPIOArchive {
    enum Kind { case directory, file(mode: UInt32), characterDevice(major: UInt32, minor: UInt32) }

    private(set) var bytes: [UInt8] = []
    private var inode: UInt32 = 1

    mutating func add(_ path: String, _ kind: Kind, contents: [UInt8] = []) {
        let mode: UInt32
        var rdev: (UInt32, UInt32) = (0, 0)
        switch kind {
        case .directory: mode = 0o040755
        case .file(let m): mode = 0o100000 | m
        case .characterDevice(let major, let minor): mode = 0o020600; rdev = (major, minor)
        }
        let isDir: Bool = { if case .directory = kind { return true } else { return false } }()
        header(name: path, inode: inode, mode: mode, nlink: isDir ? 2 : 1, size: UInt32(contents.count), rdev: rdev)
        bytes += contents
        pad()
        inode += 1
    }

    mutating func finish() -> [UInt8] {
        header(name: "TRAILER!!!", inode: 0, mode: 0, nlink: 1, size: 0, rdev: (0, 0))
        return bytes
    }

    private mutating func header(name: String, inode: UInt32, mode: UInt32, nlink: UInt32, size: UInt32, rdev: (UInt32, UInt32)) {
        let nameBytes = Array(name.utf8)
        let fields: [UInt32] = [inode, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, UInt32(nameBytes.count + 1), 0]
        bytes += Array("070701".utf8)
        for f in fields { bytes += Array(String(format: "%08X", f).utf8) }
        bytes += nameBytes + [0]
        pad()
    }

    private mutating func pad() {
        while bytes.count % 4 != 0 { bytes.append(0) }
    }
}
