import Testing
@testable import BlockCore
@testable import DiskFormats

/// The structures that carry their own CRC-32C ("computed over the entire structure with the
/// Checksum field set to zero", MS-VHDX 2.2.2, 2.2.3, 2.3.1.1) keep the same checksums now that
/// the field-zeroing CRC is one incremental computation over three pieces. The metadata region
/// has no checksum of its own (MS-VHDX 2.6.1), so only its bytes are covered, by the layout golden.
@Suite("VHDX field-zeroing checksums")
struct VHDXChecksumFieldTests {
    /// Each serialized structure's stored CRC equals the one-shot CRC of a copy whose field is zero.
    @Test func storedChecksumIsTheOneShotCRCOfTheZeroedStructure() {
        let header = VHDXHeader(sequenceNumber: 9, fileWriteGuid: GUID.derived(seed: [1], label: "file"),
                                dataWriteGuid: GUID.derived(seed: [1], label: "data"),
                                logLength: UInt32(VHDX.mib), logOffset: VHDX.mib).serialize()
        let table = VHDXRegionTable(entries: [
            VHDXRegionEntry(guid: VHDX.batRegion, fileOffset: 3 * VHDX.mib, length: UInt32(VHDX.mib), required: true),
            VHDXRegionEntry(guid: VHDX.metadataRegion, fileOffset: 2 * VHDX.mib, length: UInt32(VHDX.mib), required: true),
        ]).serialize()
        let entry = VHDXLogEntry(sequenceNumber: 3, tail: 0, logGuid: GUID.derived(seed: [2], label: "log"),
                                 flushedFileOffset: 4 * VHDX.mib, lastFileOffset: 4 * VHDX.mib,
                                 descriptors: [.data(fileOffset: 3 * VHDX.mib, sector: [UInt8](repeating: 0x5A, count: 4096)),
                                               .zero(fileOffset: 5 * VHDX.mib, length: 8192)]).serialize()
        for (name, bytes) in [("header", header), ("region table", table), ("log entry", entry)] {
            var zeroed = bytes
            zeroed.putLE32(0, at: 4)
            #expect(bytes.le32(4) == CRC32C.checksum(zeroed), "\(name)")
            #expect(bytes.le32(4) == CRC32C.checksum(bytes, zeroingFieldAt: 4), "\(name)")
        }
    }

    /// A log entry's CRC covers the whole entry (vhdx-notes §6); the value was computed by an
    /// independent bit-at-a-time CRC-32C over the same 4096 bytes (one zero descriptor).
    @Test func logEntryGoldenChecksum() throws {
        let guid = try #require(GUID("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"))
        let entry = VHDXLogEntry(sequenceNumber: 7, tail: 0, logGuid: guid, flushedFileOffset: 0x400000,
                                 lastFileOffset: 0x500000, descriptors: [.zero(fileOffset: 0x300000, length: 4096)]).serialize()
        #expect(entry.count == 4096)
        #expect(entry.le32(4) == 0xF85D_0829)
    }
}
