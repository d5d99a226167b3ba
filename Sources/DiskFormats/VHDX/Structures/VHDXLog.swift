import BlockCore

/// One change a log entry makes to the file [SPEC:430-495].
public enum VHDXLogDescriptor: Sendable, Equatable {
    /// A 4 KiB sector written at `fileOffset` (4 KiB-aligned).
    case data(fileOffset: UInt64, sector: [UInt8])
    /// `length` zero bytes at `fileOffset` (both multiples of 4 KiB).
    case zero(fileOffset: UInt64, length: UInt64)
}

/// A log entry: header, descriptors and data sectors [SPEC:380-495] (vhdx-notes §6).
public struct VHDXLogEntry: Sendable, Equatable {
    public var sequenceNumber: UInt64
    /// Ring offset of the first entry of the sequence that ends with this one.
    public var tail: UInt32
    public var logGuid: GUID
    public var flushedFileOffset: UInt64
    public var lastFileOffset: UInt64
    public var descriptors: [VHDXLogDescriptor]

    public init(sequenceNumber: UInt64, tail: UInt32, logGuid: GUID, flushedFileOffset: UInt64,
                lastFileOffset: UInt64, descriptors: [VHDXLogDescriptor]) {
        self.sequenceNumber = sequenceNumber
        self.tail = tail
        self.logGuid = logGuid
        self.flushedFileOffset = flushedFileOffset
        self.lastFileOffset = lastFileOffset
        self.descriptors = descriptors
    }

    static let sector = VHDX.logSectorSize
    static let maxTarget: UInt64 = 2 * VHDX.maxVirtualSize

    /// Descriptor sectors: the first holds the 64-byte header and 126 descriptors, later ones 128
    /// [Q:block/vhdx-log.c:316-327].
    static func descriptorSectors(_ count: Int) -> Int { (count + 2 + 127) / 128 }

    public var dataSectorCount: Int { descriptors.reduce(0) { if case .data = $1 { return $0 + 1 } else { return $0 } } }
    public var entryLength: Int { (Self.descriptorSectors(descriptors.count) + dataSectorCount) * Self.sector }

    /// The entry's bytes, checksummed.
    public func serialize() -> [UInt8] {
        let descSectors = Self.descriptorSectors(descriptors.count)
        var out = [UInt8](repeating: 0, count: entryLength)
        out.put(VHDX.logEntrySignature, at: 0)
        out.putLE32(UInt32(entryLength), at: 8)
        out.putLE32(tail, at: 12)
        out.putLE64(sequenceNumber, at: 16)
        out.putLE32(UInt32(descriptors.count), at: 24)
        out.put(logGuid.bytes, at: 32)
        out.putLE64(flushedFileOffset, at: 48)
        out.putLE64(lastFileOffset, at: 56)
        var dataIndex = 0
        for (i, d) in descriptors.enumerated() {
            let at = 64 + i * 32
            switch d {
            case let .data(off, sector):
                precondition(sector.count == Self.sector, "a data descriptor carries one 4 KiB sector")
                out.put(VHDX.dataDescriptorSignature, at: at)
                out.put(Array(sector[4092..<4096]), at: at + 4)
                out.put(Array(sector[0..<8]), at: at + 8)
                out.putLE64(off, at: at + 16)
                out.putLE64(sequenceNumber, at: at + 24)
                let ds = (descSectors + dataIndex) * Self.sector
                out.put(VHDX.dataSectorSignature, at: ds)
                out.putLE32(UInt32(truncatingIfNeeded: sequenceNumber >> 32), at: ds + 4)
                out.put(Array(sector[8..<4092]), at: ds + 8)
                out.putLE32(UInt32(truncatingIfNeeded: sequenceNumber), at: ds + 4092)
                dataIndex += 1
            case let .zero(off, len):
                out.put(VHDX.zeroDescriptorSignature, at: at)
                out.putLE64(len, at: at + 8)
                out.putLE64(off, at: at + 16)
                out.putLE64(sequenceNumber, at: at + 24)
            }
        }
        out.putLE32(CRC32C.checksum(out, zeroingFieldAt: 4), at: 4)
        return out
    }

    /// Parses and validates the entry at ring offset `position`. `readRing(ringOffset, count)`
    /// returns bytes of the ring, wrapping at `logLength`. `fileOffset` names the entry in errors.
    public static func parse(position: UInt32, logLength: UInt32, logGuid: GUID, fileOffset: UInt64,
                             readRing: (UInt32, Int) throws -> [UInt8]) throws -> (entry: VHDXLogEntry, length: UInt32) {
        let head = try readRing(position, sector)
        let v = ByteView(head, base: fileOffset, format: VHDX.formatName, structure: "log entry")
        guard try v.slice(0, 4) == VHDX.logEntrySignature else { throw v.error(at: 0, "signature is not 'loge'") }
        let length = try v.u32(8)
        guard length >= UInt32(sector), length % UInt32(sector) == 0, length <= logLength else {
            throw v.error(at: 8, "entry length \(length) is not a multiple of 4 KiB within the log (\(logLength))")
        }
        let tail = try v.u32(12)
        guard tail % UInt32(sector) == 0, tail < logLength else { throw v.error(at: 12, "tail \(tail) is outside the log") }
        let seq = try v.u64(16)
        guard seq > 0 else { throw v.error(at: 16, "sequence number is 0") }
        let count = Int(try v.u32(24))
        let guid = GUID(bytes: try v.slice(32, 16))
        guard guid == logGuid else { throw v.error(at: 32, "log GUID \(guid) differs from the header's \(logGuid)") }
        let flushed = try v.u64(48), last = try v.u64(56)
        guard flushed % VHDX.mib == 0, last % VHDX.mib == 0, flushed <= Self.maxTarget, last <= Self.maxTarget else {
            throw v.error(at: 48, "flushed/last file offsets are not multiples of 1 MiB")
        }
        // Bound the descriptor count by the entry length before reading anything else.
        guard count <= Int(length) / 32 else { throw v.error(at: 24, "descriptor count \(count) cannot fit in \(length) bytes") }
        let descSectors = descriptorSectors(count)
        guard descSectors * sector <= Int(length) else { throw v.error(at: 24, "descriptor count \(count) cannot fit in \(length) bytes") }
        let bytes = try readRing(position, Int(length))
        let ev = ByteView(bytes, base: fileOffset, format: VHDX.formatName, structure: "log entry")
        var descriptors: [VHDXLogDescriptor] = []
        var dataIndex = 0
        for i in 0..<count {
            let at = 64 + i * 32
            let sig = try ev.slice(at, 4)
            let off = try ev.u64(at + 16)
            guard try ev.u64(at + 24) == seq else { throw ev.error(at: at + 24, "descriptor \(i) sequence differs from the entry's") }
            guard off % UInt64(sector) == 0 else { throw ev.error(at: at + 16, "descriptor \(i) file offset is not 4 KiB-aligned") }
            // No VHDX file can be larger than a 64 TiB disk plus its metadata; a target beyond
            // 128 TiB (or one that overflows) is garbage, not a file extension to honour.
            guard off <= Self.maxTarget else { throw ev.error(at: at + 16, "descriptor \(i) file offset 0x\(String(off, radix: 16)) is beyond any VHDX file") }
            if sig == VHDX.dataDescriptorSignature {
                let ds = (descSectors + dataIndex) * sector
                guard ds + sector <= bytes.count else { throw ev.error(at: at, "data sector \(dataIndex) lies past the entry length") }
                guard Array(bytes[ds..<ds + 4]) == VHDX.dataSectorSignature else { throw ev.error(at: ds, "data sector signature is not 'data'") }
                let high = UInt64(bytes.le32(ds + 4)), low = UInt64(bytes.le32(ds + 4092))
                guard high << 32 | low == seq else { throw ev.error(at: ds + 4, "data sector sequence differs from the entry's") }
                var s = [UInt8](repeating: 0, count: sector)
                s.put(Array(bytes[at + 8..<at + 16]), at: 0)
                s.put(Array(bytes[ds + 8..<ds + 4092]), at: 8)
                s.put(Array(bytes[at + 4..<at + 8]), at: 4092)
                descriptors.append(.data(fileOffset: off, sector: s))
                dataIndex += 1
            } else if sig == VHDX.zeroDescriptorSignature {
                let len = try ev.u64(at + 8)
                guard len <= Self.maxTarget - off else { throw ev.error(at: at + 8, "zero length \(len) reaches beyond any VHDX file") }
                guard len % UInt64(sector) == 0 else { throw ev.error(at: at + 8, "zero length \(len) is not a multiple of 4 KiB") }
                descriptors.append(.zero(fileOffset: off, length: len))
            } else {
                throw ev.error(at: at, "descriptor \(i) signature is neither 'desc' nor 'zero'")
            }
        }
        let stored = ev.bytes.le32(4)
        let computed = CRC32C.checksum(bytes, zeroingFieldAt: 4)
        guard stored == computed else { throw ev.error(at: 4, "checksum 0x\(String(stored, radix: 16)) does not match computed 0x\(String(computed, radix: 16))") }
        return (VHDXLogEntry(sequenceNumber: seq, tail: tail, logGuid: guid, flushedFileOffset: flushed,
                             lastFileOffset: last, descriptors: descriptors), length)
    }
}
