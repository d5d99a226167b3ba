import BlockCore

/// The progress record of a replacement file (`<plugin>.fill`): which chunks of the replacement
/// hold their final bytes, each with the digest of those bytes as the stream delivered them, and
/// the phase (verified, switched). Append-only; a record is appended (and synced) only after the
/// chunk's bytes are durable in the replacement, so the journal never names a chunk that is not.
///
///     header (64 bytes)
///       0   8  magic "BLFILL\0\0" and the digest kind: 1 SHA-256, 2 CRC-32C (`DigestKind`)
///       8   8  chunk size (u64 LE)
///      16   8  file size (u64 LE): the native file's size (the plugin's pointer records it)
///      24  32  identity: SHA-256 of the plugin's skeleton and trailer (another plugin: refused)
///      56   4  CRC-32 of bytes 0..<56
///      60   4  zero
///     record (48 bytes), repeated
///       0   4  kind: 1 filled, 2 invalidated, 3 verified, 4 switched
///       4   8  chunk index (filled, invalidated), else 0
///      12  32  digest of the chunk's bytes (filled): SHA-256, or CRC-32C (u32 LE) and 28 zero
///              bytes; else zeros
///      44   4  CRC-32 of bytes 0..<44
///
/// A torn or damaged tail (short record, bad CRC, unknown kind) ends the journal: it is cut
/// there when opened for writing, and what precedes it stands.
public struct FillJournal: Sendable {
    public static func magic(_ kind: DigestKind) -> [UInt8] { Array("BLFILL".utf8) + [0, kind.rawValue] }

    /// How a journal's chunk digests are computed; a journal keeps the kind it was started with
    /// (one started before CRC-32C digests resumes with SHA-256). What the digest guards is a
    /// replacement changed *between* processes, behind the journal (docs/replacement-file.md,
    /// "Verification"): accidental damage, which a CRC detects as the journal's own CRC-32 does.
    public enum DigestKind: UInt8, Sendable, CaseIterable {
        case sha256 = 1
        /// CRC-32C in hardware: a tenth of SHA-256's CPU, the fill's largest cost (`perf`).
        case crc32c = 2

        public func digest(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
            switch self {
            case .sha256: return SHA256.hash(bytes)
            case .crc32c:
                var out: [UInt8] = []
                out.appendLE32(CRC32C.checksum(bytes))
                return out + [UInt8](repeating: 0, count: 28)
            }
        }
    }
    public static let headerLength = 64
    public static let recordLength = 48

    public enum Kind: UInt32, Sendable {
        case filled = 1, invalidated = 2, verified = 3, switched = 4
    }

    public struct Header: Sendable, Equatable {
        public var chunkSize: UInt64
        public var fileSize: UInt64
        public var identity: [UInt8]
        public var digest: DigestKind = .crc32c
        public var chunkCount: Int { Int((fileSize + chunkSize - 1) / chunkSize) }
    }

    public struct Record: Sendable, Equatable {
        public var kind: Kind
        public var chunk: UInt64
        public var digest: [UInt8]
        public init(kind: Kind, chunk: UInt64 = 0, digest: [UInt8] = [UInt8](repeating: 0, count: 32)) {
            self.kind = kind
            self.chunk = chunk
            self.digest = digest
        }
    }

    /// What a journal says, replayed.
    public struct State: Sendable, Equatable {
        public var header: Header
        /// The recorded digest of each chunk that is filled.
        public var digests: [[UInt8]?]
        public var verified = false
        public var switched = false
        /// Length of the valid prefix, and bytes after it that were dropped.
        public var validLength: UInt64
        public var tornBytes: UInt64
        public var filledCount: Int { digests.reduce(0) { $0 + ($1 == nil ? 0 : 1) } }
    }

    static func encode(_ h: Header) -> [UInt8] {
        var out = magic(h.digest)
        out.appendLE64(h.chunkSize)
        out.appendLE64(h.fileSize)
        out += h.identity.prefix(32) + [UInt8](repeating: 0, count: max(0, 32 - h.identity.count))
        out.appendLE32(CRC32.checksum(out))
        out.appendLE32(0)
        return out
    }

    static func encode(_ r: Record) -> [UInt8] {
        var out: [UInt8] = []
        out.appendLE32(r.kind.rawValue)
        out.appendLE64(r.chunk)
        out += r.digest.prefix(32) + [UInt8](repeating: 0, count: max(0, 32 - r.digest.count))
        out.appendLE32(CRC32.checksum(out))
        return out
    }

    static func parseHeader(_ b: [UInt8], path: String) throws -> Header {
        guard b.count >= headerLength else {
            throw FormatError("replacement progress journal", "header", at: 0, "\(b.count) bytes, a header has \(headerLength) (\(path))")
        }
        guard Array(b[0..<7]) == Array(magic(.sha256).prefix(7)), let kind = DigestKind(rawValue: b[7]) else {
            throw FormatError("replacement progress journal", "header", at: 0, "bad magic (\(path))")
        }
        guard b.le32(56) == CRC32.checksum(Array(b[0..<56])) else {
            throw FormatError("replacement progress journal", "header", at: 56, "CRC-32 mismatch (\(path))")
        }
        let h = Header(chunkSize: b.le64(8), fileSize: b.le64(16), identity: Array(b[24..<56]), digest: kind)
        guard h.chunkSize >= 4096, h.chunkSize & (h.chunkSize - 1) == 0, h.chunkSize <= 1 << 30 else {
            throw FormatError("replacement progress journal", "header", at: 8, "chunk size \(h.chunkSize) is not a power of two in 4 KiB–1 GiB (\(path))")
        }
        return h
    }

    /// Replays `bytes` (a whole journal) of the replacement of a native file of `fileSize` bytes
    /// (the plugin's pointer says it). The chunk table is sized by the header, so the header's file
    /// size must be that trusted one before anything is allocated: a damaged or foreign journal
    /// cannot make the replay allocate by its own numbers.
    public static func replay(_ bytes: [UInt8], path: String, fileSize: UInt64) throws -> State {
        let header = try parseHeader(bytes, path: path)
        guard header.fileSize == fileSize else {
            throw FormatError("replacement progress journal", "header", at: 16,
                              "file size \(header.fileSize), but the plugin's native file has \(fileSize) bytes (\(path))")
        }
        var state = State(header: header, digests: Array(repeating: nil, count: header.chunkCount),
                          validLength: UInt64(headerLength), tornBytes: 0)
        var at = headerLength
        while at + recordLength <= bytes.count {
            let r = Array(bytes[at..<(at + recordLength)])
            guard r.le32(44) == CRC32.checksum(Array(r[0..<44])), let kind = Kind(rawValue: r.le32(0)) else { break }
            let chunk = r.le64(4)
            switch kind {
            case .filled, .invalidated:
                guard chunk < UInt64(header.chunkCount) else { break }
                state.digests[Int(chunk)] = kind == .filled ? Array(r[12..<44]) : nil
                if kind == .invalidated { state.verified = false; state.switched = false }
            case .verified: state.verified = true
            case .switched: state.switched = true
            }
            at += recordLength
        }
        state.validLength = UInt64(at)
        state.tornBytes = UInt64(bytes.count - at)
        return state
    }

    /// Reads and replays the journal at `path` (without writing it).
    public static func read(path: String, fileSize: UInt64) throws -> State {
        let f = try PosixDurableFile(path: path, readOnly: true)
        return try replay(try f.read(at: 0, count: Int(try f.size())), path: path, fileSize: fileSize)
    }
}

