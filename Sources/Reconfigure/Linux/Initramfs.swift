import Archives
import BlockCore
import Processes

/// How an initramfs (or one of its segments) is compressed. The kernel accepts each of these
/// (init/initramfs.c, lib/decompress.c); we compress with the same tool the guest's tooling uses.
public enum InitramfsCompression: String, Sendable, Codable {
    case none, gzip, zstd, xz, lz4, bzip2

    /// Recognizes the compressor from the first bytes.
    static func detect(_ b: ArraySlice<UInt8>) -> InitramfsCompression? {
        let p = Array(b.prefix(6))
        if p.starts(with: Array("070701".utf8)) { return InitramfsCompression.none }
        if p.starts(with: [0x1F, 0x8B]) { return .gzip }
        if p.starts(with: [0x28, 0xB5, 0x2F, 0xFD]) { return .zstd }
        if p.starts(with: [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) { return .xz }
        if p.starts(with: [0x02, 0x21, 0x4C, 0x18]) { return .lz4 }
        if p.starts(with: [0x42, 0x5A, 0x68]) { return .bzip2 }
        return nil
    }

    /// The archive inside `bytes`. gzip and xz report the zero padding boot loaders append as
    /// "trailing garbage" with status 2 after writing everything: accepted when output came.
    func decompress(_ bytes: [UInt8]) throws -> [UInt8] {
        if self == .none { return bytes }
        let r = try Command(decompressCommand, input: .bytes(bytes)).run(check: false)
        if r.termination == .exited(2) && !r.stdout.isEmpty { return r.stdout }
        return try r.checked().stdout
    }

    func compress(_ archive: [UInt8]) throws -> [UInt8] {
        if self == .none { return archive }
        return try Command(compressCommand, input: .bytes(archive)).run().stdout
    }

    var decompressCommand: [String] {
        switch self {
        case .none: return ["cat"]
        case .gzip: return ["gzip", "-dc"]
        case .zstd: return ["zstd", "-dcq"]
        case .xz: return ["xz", "-dc"]
        case .lz4: return ["lz4", "-dc"]
        case .bzip2: return ["bzip2", "-dc"]
        }
    }

    /// Flags as Debian's mkinitramfs passes them; xz must use CRC32 (the kernel's xz decoder
    /// has no CRC64), lz4 must use the legacy frame.
    var compressCommand: [String] {
        switch self {
        case .none: return ["cat"]
        case .gzip: return ["gzip", "-n", "-9"]
        case .zstd: return ["zstd", "-q", "-19", "-T0"]
        case .xz: return ["xz", "--check=crc32", "-9"]
        case .lz4: return ["lz4", "-l", "-9", "-q"]
        case .bzip2: return ["bzip2", "-9"]
        }
    }
}

/// An initramfs: optional uncompressed cpio segments first (early microcode/firmware, as Debian
/// builds them), then the main archive, possibly compressed.
public struct Initramfs: Sendable {
    /// Raw bytes of the leading uncompressed segments, kept byte for byte.
    public var prefix: [UInt8]
    public var compression: InitramfsCompression
    public var entries: [CpioEntry]

    public init(prefix: [UInt8] = [], compression: InitramfsCompression, entries: [CpioEntry]) {
        self.prefix = prefix
        self.compression = compression
        self.entries = entries
    }

    public static func decode(_ bytes: [UInt8]) throws -> Initramfs {
        var pos = 0
        var prefixEnd = 0
        // Uncompressed segments, each followed by zero padding, until a compressed stream starts.
        while pos < bytes.count, InitramfsCompression.detect(bytes[pos...]) == InitramfsCompression.none {
            let (entries, end) = try Cpio.read(bytes, from: pos)
            var next = end
            while next < bytes.count, bytes[next] == 0 { next += 1 }
            if next >= bytes.count {
                // The whole initramfs is uncompressed: the last segment is the main archive.
                return Initramfs(prefix: Array(bytes[0..<prefixEnd]), compression: .none, entries: entries)
            }
            prefixEnd = next
            pos = next
        }
        guard pos < bytes.count else { throw FormatError("initramfs", "archive", at: UInt64(pos), "no archive found") }
        guard let kind = InitramfsCompression.detect(bytes[pos...]) else {
            throw FormatError("initramfs", "main archive", at: UInt64(pos), "unknown compression magic \(Array(bytes[pos..<min(pos + 4, bytes.count)]).hex)")
        }
        let (entries, _) = try Cpio.read(try kind.decompress(Array(bytes[pos...])))
        return Initramfs(prefix: Array(bytes[0..<pos]), compression: kind, entries: entries)
    }

    public func encode() throws -> [UInt8] {
        prefix + (try compression.compress(Cpio.write(entries)))
    }

    public func entry(_ name: String) -> CpioEntry? { entries.first { $0.name == Initramfs.normalize(name) } }
    public func contains(_ name: String) -> Bool { entry(name) != nil }

    /// Adds or replaces a member; creates missing parent directories first.
    public mutating func put(_ e: CpioEntry) {
        var e = e
        e.name = Initramfs.normalize(e.name)
        let parts = e.name.split(separator: "/")
        var dir = ""
        for p in parts.dropLast() {
            dir = dir.isEmpty ? String(p) : dir + "/" + p
            if !contains(dir) { entries.append(.directory(dir)) }
        }
        if let i = entries.firstIndex(where: { $0.name == e.name }) { entries[i] = e } else { entries.append(e) }
    }

    /// Member names are stored without a leading "/" or "./".
    static func normalize(_ name: String) -> String {
        var n = Substring(name)
        while n.hasPrefix("./") { n = n.dropFirst(2) }
        while n.hasPrefix("/") { n = n.dropFirst() }
        return String(n)
    }
}
