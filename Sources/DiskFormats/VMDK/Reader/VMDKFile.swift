import BlockCore
#if canImport(Glibc)
import Glibc
#endif

/// A VMDK disk, read-only, as a block source: a single sparse extent file (monolithicSparse,
/// streamOptimized; its embedded descriptor is read for information) or a text descriptor file
/// whose extents (FLAT, VMFS, SPARSE, VMFSSPARSE, ZERO) are files beside it.
///
/// Extent file names are resolved in the descriptor's directory and must stay there: no absolute
/// paths, no `..`, no directory separators. Differencing disks (a parentCID other than ffffffff)
/// are refused: BootLab writes none and does not read chains.
public final class VMDKFile: BlockSource {
    public enum Piece: Sendable {
        case flat(any BlockSource, offset: UInt64)
        case sparse(VMDKSparseExtent)
        case zero
    }

    public let size: UInt64
    /// The descriptor (embedded or the file itself).
    public let descriptor: VMDKDescriptor?
    /// The single sparse extent when the file is one (monolithicSparse, streamOptimized).
    public let sparse: VMDKSparseExtent?
    /// Extents as (virtual start, length, piece), in order.
    public let pieces: [(start: UInt64, length: UInt64, piece: Piece)]
    public let fileSize: UInt64

    init(size: UInt64, descriptor: VMDKDescriptor?, sparse: VMDKSparseExtent?, pieces: [(UInt64, UInt64, Piece)], fileSize: UInt64) {
        self.size = size
        self.descriptor = descriptor
        self.sparse = sparse
        self.pieces = pieces.map { (start: $0.0, length: $0.1, piece: $0.2) }
        self.fileSize = fileSize
    }

    /// A sparse extent file held by any source (the fuzz harness, tests).
    public convenience init(source: any BlockSource) throws {
        let x = try VMDKSparseExtent(file: source)
        if let d = x.descriptor { try Self.refuseParent(d, at: x.descriptorRange.lowerBound) }
        self.init(size: x.size, descriptor: x.descriptor, sparse: x, pieces: [(0, x.size, .sparse(x))], fileSize: source.size)
    }

    static func refuseParent(_ d: VMDKDescriptor, at: UInt64) throws {
        if let p = d.parentCID, p != 0xFFFF_FFFF {
            throw FormatError(VMDK.errorName, "descriptor", at: at, "parentCID \(String(p, radix: 16)): differencing VMDKs (with a parent) are not supported")
        }
    }

    public static func open(path: String) throws -> VMDKFile {
        let f = try RawFile(path: path)
        let head = try f.read(at: 0, count: Int(min(f.size, 512)))
        if head.starts(with: VMDK.magic) { return try VMDKFile(source: f) }
        guard f.size <= VMDK.maxDescriptorBytes else {
            throw FormatError(VMDK.errorName, "descriptor", at: 0, "neither a sparse extent (\"KDMV\") nor a descriptor file (larger than 1 MiB)")
        }
        let text = try f.read(at: 0, count: Int(f.size))
        let d = try VMDKDescriptor.parse(text, at: 0)
        guard String(decoding: text.prefix(40), as: UTF8.self).lowercased().contains("disk descriptorfile") || d.createType != nil else {
            throw FormatError(VMDK.errorName, "descriptor", at: 0, "neither a sparse extent (\"KDMV\") nor a descriptor file")
        }
        try refuseParent(d, at: 0)
        let dir = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        var pieces: [(UInt64, UInt64, Piece)] = []
        var pos: UInt64 = 0
        for (i, e) in d.extents.enumerated() {
            func err(_ r: String) -> FormatError { FormatError(VMDK.errorName, "descriptor extent \(i)", at: 0, r) }
            let (len, o) = e.sectors.multipliedReportingOverflow(by: 512)
            guard !o, pos + len <= VMDK.maxCapacitySectors * 512 else { throw err("extents add up to more than \(VMDK.maxCapacitySectors) sectors") }
            guard e.access != "NOACCESS" else { throw err("extent is NOACCESS") }
            switch e.type {
            case "ZERO":
                pieces.append((pos, len, .zero))
            case "FLAT", "VMFS", "SPARSE", "VMFSSPARSE":
                let name = e.fileName ?? ""
                guard !name.isEmpty, !name.hasPrefix("/"), !name.contains("/"), name != "..", name != "." else {
                    throw err("extent file \"\(name)\" is not a plain name in the descriptor's directory")
                }
                let p = dir + "/" + name
                // A plain name may still be a symbolic link out of the directory: resolve both.
                guard let realDir = resolved(dir), let real = resolved(p) else {
                    throw err("extent file \(name) does not exist beside the descriptor")
                }
                guard real.hasPrefix(realDir.hasSuffix("/") ? realDir : realDir + "/"), !real.dropFirst(realDir.count + 1).contains("/") else {
                    throw err("extent file \(name) resolves to \(real), outside the descriptor's directory")
                }
                let file = try RawFile(path: p)
                if e.type == "SPARSE" || e.type == "VMFSSPARSE" {
                    let x = try VMDKSparseExtent(file: file, name: name)
                    guard x.size >= len else { throw err("sparse extent \(name) holds \(x.size) bytes, the descriptor says \(len)") }
                    pieces.append((pos, len, .sparse(x)))
                } else {
                    let (start, o2) = e.offset.multipliedReportingOverflow(by: 512)
                    guard !o2, start <= file.size, file.size - start >= len else {
                        throw err("flat extent \(name) has \(file.size) bytes, the extent needs \(len) from byte \(start)")
                    }
                    pieces.append((pos, len, .flat(file, offset: start)))
                }
            default:
                throw err("extent type \(e.type) is not supported (raw device mappings are not files)")
            }
            pos += len
        }
        guard !pieces.isEmpty else { throw FormatError(VMDK.errorName, "descriptor", at: 0, "descriptor names no extent") }
        return VMDKFile(size: pos, descriptor: d, sparse: nil, pieces: pieces, fileSize: f.size)
    }

    /// realpath(3) as a String, nil when the path does not resolve.
    static func resolved(_ path: String) -> String? {
        guard let p = realpath(path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }

    private func pieceIndex(at offset: UInt64) -> Int {
        var lo = 0, hi = pieces.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if pieces[mid].start + pieces[mid].length > offset { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        var done = 0
        var i = pieceIndex(at: offset)
        while done < buffer.count {
            let pos = offset + UInt64(done)
            while pieces[i].start + pieces[i].length <= pos { i += 1 }
            let p = pieces[i]
            let n = Int(min(UInt64(buffer.count - done), p.start + p.length - pos))
            let sub = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + n])
            switch p.piece {
            case .zero: sub.initializeMemory(as: UInt8.self, repeating: 0)
            case let .flat(f, off): try f.read(at: off + pos - p.start, into: sub)
            case let .sparse(x): try x.read(at: pos - p.start, into: sub)
            }
            done += n
        }
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out: [Extent] = []
        var i = pieceIndex(at: r.lowerBound)
        var pos = r.lowerBound
        while pos < r.upperBound, i < pieces.count {
            let p = pieces[i]
            let end = min(r.upperBound, p.start + p.length)
            switch p.piece {
            case .zero: out.append(Extent(offset: pos, length: end - pos, kind: .zero))
            case let .flat(f, off):
                for e in try f.extents(in: off + pos - p.start..<off + end - p.start) {
                    out.append(Extent(offset: e.offset - off + p.start, length: e.length, kind: e.kind))
                }
            case let .sparse(x):
                for e in try x.extents(in: pos - p.start..<end - p.start) {
                    out.append(Extent(offset: e.offset + p.start, length: e.length, kind: e.kind))
                }
            }
            pos = end
            i += 1
        }
        return coalesce(out)
    }

    /// The facts `bootlab info` prints.
    public func info(path: String) throws -> ImageInfo {
        var fields: [InfoField] = [
            InfoField("virtual_size", .bytes(size)),
            InfoField("file_size", .bytes(fileSize)),
            InfoField("create_type", descriptor?.createType.map { .string($0) } ?? .null),
            InfoField("extents", .integer(UInt64(pieces.count))),
        ]
        if let x = sparse {
            let h = x.header
            fields += [
                InfoField("version", .integer(UInt64(h.version))),
                InfoField("grain_size", .bytes(x.grainBytes)),
                InfoField("compressed", .bool(h.isCompressed)),
                InfoField("redundant_grain_table", .bool(h.hasRedundantGrainTable)),
                InfoField("allocated_grains", .integer(try x.allocatedGrainCount())),
            ]
        }
        if let d = descriptor {
            fields.append(InfoField("cid", d.value("CID").map { .string($0) } ?? .null))
            fields.append(InfoField("adapter_type", d.ddbValue("ddb.adapterType").map { .string($0) } ?? .null))
        }
        return ImageInfo(format: VMDK.formatName, path: path, fields: fields)
    }
}
