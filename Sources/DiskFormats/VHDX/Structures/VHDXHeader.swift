import BlockCore

/// The file type identifier at offset 0: `vhdxfile` + a UTF-16LE creator string [SPEC:236-240].
public struct VHDXFileIdentifier: Sendable, Equatable {
    public var creator: String

    public init(creator: String) { self.creator = creator }

    /// Parses the first 520 bytes (or more) of the file.
    public static func parse(_ bytes: [UInt8]) throws -> VHDXFileIdentifier {
        let v = ByteView(bytes, base: VHDX.fileIdentifierOffset, format: VHDX.formatName, structure: "file identifier")
        guard try v.slice(0, 8) == VHDX.fileSignature else { throw v.error(at: 0, "signature is not 'vhdxfile'") }
        let raw = try v.slice(8, 512)
        var units: [UInt16] = []
        for i in stride(from: 0, to: 512, by: 2) {
            let u = raw.le16(i)
            if u == 0 { break }  // NUL-terminated when shorter than 256 units; QEMU writes no NUL
            units.append(u)
        }
        return VHDXFileIdentifier(creator: String(decoding: units, as: UTF16.self))
    }

    /// The 64 KiB identifier block.
    public func serialize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 0x10000)
        out.put(VHDX.fileSignature, at: 0)
        var i = 8
        for u in creator.utf16.prefix(256) { out.putLE16(u, at: i); i += 2 }
        return out
    }
}

/// One of the two 4 KiB headers [SPEC:251-289].
public struct VHDXHeader: Sendable, Equatable {
    public var sequenceNumber: UInt64
    public var fileWriteGuid: GUID
    public var dataWriteGuid: GUID
    public var logGuid: GUID
    public var logVersion: UInt16
    public var version: UInt16
    public var logLength: UInt32
    public var logOffset: UInt64

    public init(sequenceNumber: UInt64, fileWriteGuid: GUID, dataWriteGuid: GUID, logGuid: GUID = .zero,
                logVersion: UInt16 = 0, version: UInt16 = 1, logLength: UInt32, logOffset: UInt64) {
        self.sequenceNumber = sequenceNumber
        self.fileWriteGuid = fileWriteGuid
        self.dataWriteGuid = dataWriteGuid
        self.logGuid = logGuid
        self.logVersion = logVersion
        self.version = version
        self.logLength = logLength
        self.logOffset = logOffset
    }

    /// Parses a 4 KiB header; throws on a bad signature or checksum (the header is then not
    /// "valid" in the spec's sense and the other copy decides, [SPEC:270]).
    public static func parse(_ bytes: [UInt8], at offset: UInt64, name: String) throws -> VHDXHeader {
        let v = ByteView(bytes, base: offset, format: VHDX.formatName, structure: name)
        guard v.count >= VHDX.headerSize else { throw v.error(at: v.count, "truncated: \(v.count) of 4096 bytes") }
        guard try v.slice(0, 4) == VHDX.headerSignature else { throw v.error(at: 0, "signature is not 'head'") }
        let stored = try v.u32(4)
        let computed = CRC32C.checksum(Array(bytes[0..<VHDX.headerSize]), zeroingFieldAt: 4)
        guard stored == computed else {
            throw v.error(at: 4, "checksum 0x\(String(stored, radix: 16)) does not match computed 0x\(String(computed, radix: 16))")
        }
        return VHDXHeader(
            sequenceNumber: try v.u64(8),
            fileWriteGuid: GUID(bytes: try v.slice(16, 16)),
            dataWriteGuid: GUID(bytes: try v.slice(32, 16)),
            logGuid: GUID(bytes: try v.slice(48, 16)),
            logVersion: try v.u16(64),
            version: try v.u16(66),
            logLength: try v.u32(68),
            logOffset: try v.u64(72))
    }

    /// Field rules a valid header must also meet before it is used: version 1, log version 0, the
    /// log 1 MiB-aligned at or after 1 MiB [SPEC:272-289]. Returns the first violation.
    public func fieldProblem() -> (field: Int, reason: String)? {
        if version != 1 { return (66, "version \(version), expected 1") }
        if logVersion != 0 { return (64, "log version \(logVersion), expected 0") }
        if UInt64(logLength) % VHDX.mib != 0 { return (68, "log length 0x\(String(logLength, radix: 16)) is not a multiple of 1 MiB") }
        if logOffset % VHDX.mib != 0 || logOffset < VHDX.headerSectionSize {
            return (72, "log offset 0x\(String(logOffset, radix: 16)) is not 1 MiB-aligned at or after 1 MiB")
        }
        return nil
    }

    /// The 4 KiB header with its checksum.
    public func serialize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: VHDX.headerSize)
        out.put(VHDX.headerSignature, at: 0)
        out.putLE64(sequenceNumber, at: 8)
        out.put(fileWriteGuid.bytes, at: 16)
        out.put(dataWriteGuid.bytes, at: 32)
        out.put(logGuid.bytes, at: 48)
        out.putLE16(logVersion, at: 64)
        out.putLE16(version, at: 66)
        out.putLE32(logLength, at: 68)
        out.putLE64(logOffset, at: 72)
        out.putLE32(CRC32C.checksum(out, zeroingFieldAt: 4), at: 4)
        return out
    }
}

/// Which header is current, from the two slots' parse results [SPEC:270] [Q:block/vhdx.c:450-501].
public enum VHDXHeaderSelection {
    /// Index 0 or 1 of the current header, or nil when neither is current.
    public static func current(_ h1: VHDXHeader?, _ h2: VHDXHeader?) -> Int? {
        switch (h1, h2) {
        case (nil, nil): return nil
        case (.some, nil): return 0
        case (nil, .some): return 1
        case let (.some(a), .some(b)):
            if a.sequenceNumber > b.sequenceNumber { return 0 }
            if b.sequenceNumber > a.sequenceNumber { return 1 }
            // Equal sequence numbers: acceptable only when the headers agree (Disk2VHD writes
            // seq 1/1 with identical contents), as QEMU does.
            return a == b ? 0 : nil
        }
    }
}
