import BlockCore
import Foundation
import Testing
import TestSupport
@testable import DiskFormats

/// zlib through `Deflate`: round trips in both framings, a reader we did not write (Python's
/// zlib) inflates what we deflate, and damaged, truncated or oversized streams are typed errors.
struct DeflateTests {
    static let data: [UInt8] = {
        var g = Bytes(seed: 9)
        return g.bytes(20_000) + [UInt8](repeating: 0, count: 40_000) + Array("grain".utf8)
    }()

    @Test(arguments: [Deflate.Framing.zlib, .raw])
    func roundTrips(_ framing: Deflate.Framing) throws {
        let c = Self.data.withUnsafeBytes { Deflate.compress($0, framing: framing) }
        #expect(c.count < Self.data.count)
        var out = [UInt8](repeating: 0, count: Self.data.count)
        _ = try c.withUnsafeBytes { i in
            try out.withUnsafeMutableBytes { o in
                try Deflate.decompress(i, into: o, framing: framing, format: "test", structure: "grain", at: 0)
            }
        }
        #expect(out == Self.data)
        #expect(Self.data.withUnsafeBytes { Deflate.compress($0, framing: framing) } == c, "deterministic")
    }

    @Test func pythonsZlibInflatesOurStream() throws {
        if let missing = toolsMissing(["python3"]) { Issue.record("skipped: \(missing)"); return }
        let s = Scratch()
        let c = Self.data.withUnsafeBytes { Deflate.compress($0) }
        try Data(c).write(to: URL(fileURLWithPath: s.file("c.z")))
        let r = try run("python3", ["-c", "import zlib,sys,hashlib;print(hashlib.sha256(zlib.decompress(open(sys.argv[1],'rb').read())).hexdigest())", s.file("c.z")])
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == SHA256.hash(Self.data).hex)
    }

    @Test func badStreamsAreTypedErrors() throws {
        let c = Self.data.withUnsafeBytes { Deflate.compress($0) }
        func inflate(_ input: [UInt8], expecting n: Int) throws {
            var out = [UInt8](repeating: 0, count: n)
            _ = try input.withUnsafeBytes { i in
                try out.withUnsafeMutableBytes { o in
                    try Deflate.decompress(i, into: o, framing: .zlib, format: "test", structure: "grain", at: 77)
                }
            }
        }
        #expect(throws: FormatError.self) { try inflate(Array(c.prefix(c.count / 2)), expecting: Self.data.count) }
        #expect(throws: FormatError.self) { try inflate(c, expecting: Self.data.count - 1) }
        #expect(throws: FormatError.self) { try inflate(c, expecting: Self.data.count + 1) }
        var flipped = c
        flipped[2] ^= 0xFF
        #expect(throws: FormatError.self) { try inflate(flipped, expecting: Self.data.count) }
        #expect(throws: FormatError.self) { try inflate([], expecting: 10) }
    }
}
