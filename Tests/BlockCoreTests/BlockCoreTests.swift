import Testing
import Foundation
@testable import BlockCore

@Suite struct ChecksumTests {
    @Test func crc32cCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }

    @Test func crc32cContinues() {
        var c = CRC32C()
        c.update(Array("12345".utf8))
        c.update(Array("6789".utf8))
        #expect(c.finalize() == 0xE306_9283)
        // finalize restarts the computation.
        c.update(Array("123456789".utf8))
        #expect(c.finalize() == 0xE306_9283)
    }

    /// Pieces of every size (empty ones included, and splits inside the 8-byte words the
    /// hardware path consumes) give the one-shot CRC.
    @Test func crc32cPiecesEqualOneShot() {
        let data = (0..<4099).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) }
        let whole = CRC32C.checksum(data)
        for cuts in [[0], [1], [7, 8, 9], [0, 0, 4096], [3, 1000, 1001, 4095], Array(stride(from: 0, to: 4099, by: 13))] {
            var c = CRC32C()
            var start = 0
            for cut in cuts + [data.count] {
                c.update(Array(data[start..<cut]))
                start = cut
            }
            #expect(c.finalize() == whole, "cuts \(cuts)")
        }
        var empty = CRC32C()
        #expect(empty.finalize() == CRC32C.checksum([UInt8]()))
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    @Test func crc32cZeroingField() {
        var s = Array("1234XXXX56789".utf8)
        let expected = CRC32C.checksum(Array("1234".utf8) + [0, 0, 0, 0] + Array("56789".utf8))
        #expect(CRC32C.checksum(s, zeroingFieldAt: 4) == expected)
        s.putLE32(0, at: 4)
        #expect(CRC32C.checksum(s) == expected)
    }

    @Test func sha256KnownAnswers() {
        #expect(SHA256.hash(Array("abc".utf8)).hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        var h = SHA256()
        h.update(Array("a".utf8)); h.update(Array("bc".utf8))
        #expect(h.finalize() == SHA256.hash(Array("abc".utf8)))
    }
}

@Suite struct GUIDTests {
    @Test func mixedEndianRoundTrip() throws {
        let g = try #require(GUID("2DC27766-F623-4200-9D64-115E9BFD4A08"))
        #expect(g.bytes.hex == "6677c22d23f600429d64115e9bfd4a08")
        #expect(g.description == "2DC27766-F623-4200-9D64-115E9BFD4A08")
        #expect(GUID("{2dc27766-f623-4200-9d64-115e9bfd4a08}") == g)
        #expect(GUID("not-a-guid") == nil)
    }

    @Test func derivedIsDeterministicAndV4Shaped() {
        let a = GUID.derived(seed: [1, 2, 3], label: "data")
        #expect(a == GUID.derived(seed: [1, 2, 3], label: "data"))
        #expect(a != GUID.derived(seed: [1, 2, 3], label: "file"))
        #expect(a.bytes[7] >> 4 == 4)
        #expect(a.bytes[8] >> 6 == 2)
    }
}

@Suite struct ByteSizeTests {
    @Test func parsesQemuStyleSuffixes() throws {
        #expect(try ByteSize.parse("512") == 512)
        #expect(try ByteSize.parse("32M") == 32 << 20)
        #expect(try ByteSize.parse("1G") == 1 << 30)
        #expect(try ByteSize.parse("64KiB") == 64 << 10)
        #expect(try ByteSize.parse("2T") == 2 << 40)
        #expect(throws: ByteSize.ParseError.self) { try ByteSize.parse("12Q") }
        #expect(throws: ByteSize.ParseError.self) { try ByteSize.parse("") }
        #expect(throws: ByteSize.ParseError.self) { try ByteSize.parse("99999999999E") }
    }
}

@Suite struct RawFileTests {
    @Test func readsAndMapsHoles() throws {
        let path = NSTemporaryDirectory() + "/blockcore-\(getpid()).raw"
        defer { unlink(path) }
        let f = try RawFile.create(path: path, size: 8 << 20)
        let data = [UInt8](repeating: 0xAB, count: 4096)
        try f.write(at: 4 << 20, data)
        try f.flush()
        let r = try RawFile(path: path)
        #expect(r.size == 8 << 20)
        #expect(try r.read(at: 4 << 20, count: 4096) == data)
        #expect(try r.read(at: 0, count: 16) == [UInt8](repeating: 0, count: 16))
        let ext = try r.allExtents()
        #expect(ext.contains { $0.kind == .data && $0.offset <= 4 << 20 && $0.end >= (4 << 20) + 4096 })
        #expect(ext.first?.kind == .absent)
        #expect(ext.reduce(0) { $0 + $1.length } == 8 << 20)
        #expect(throws: BlockSourceError.self) { _ = try r.read(at: (8 << 20) - 1, count: 2) }
        #expect(throws: BlockSourceError.self) { try r.write(at: 0, [1]) }
    }

    @Test func missingFileIsIOError() {
        #expect(throws: IOError.self) { _ = try RawFile(path: "/nonexistent/bootlab") }
    }
}

@Suite struct ByteViewTests {
    @Test func boundsCheckedFieldsNameOffsets() throws {
        let v = ByteView([1, 0, 0, 0, 2], base: 0x1000, format: "T", structure: "s")
        #expect(try v.u32(0) == 1)
        do {
            _ = try v.u32(2)
            Issue.record("expected an error")
        } catch let e as FormatError {
            #expect(e.offset == 0x1002)
            #expect(e.description.contains("truncated"))
        }
    }
}
