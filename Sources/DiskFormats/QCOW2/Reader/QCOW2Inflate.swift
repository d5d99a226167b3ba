import BlockCore

/// A small, bounded raw-deflate decoder (RFC 1951) for qcow2's compressed clusters.
///
/// Foundation on Linux exposes no zlib, and DiskFormats links nothing but BlockCore, so the
/// reader carries its own. Bounded by construction: output stops at the caller's capacity (one
/// cluster), input is the slice the L2 entry names, every loop advances through one of them,
/// and every malformed stream (bad block type, over-subscribed or unusable codes, a distance
/// before the start of the output, input running out) is a typed `FormatError`.
public enum QCOW2Inflate {
    /// Decodes raw deflate `input` until `capacity` bytes are produced or the final block ends.
    /// Returns the output (exactly `capacity` bytes unless the stream ended earlier).
    public static func inflate(_ input: [UInt8], capacity: Int, errorOffset: UInt64 = 0,
                               structure: String = "compressed cluster") throws -> [UInt8] {
        var d = Decoder(input: input, capacity: capacity, errorOffset: errorOffset, structure: structure)
        try d.run()
        return d.out
    }

    struct Huffman {
        /// counts[len] = number of codes of that length (1…15); symbols sorted by (length, value).
        var counts = [UInt16](repeating: 0, count: 16)
        var symbols: [UInt16] = []
        /// Codes of at most `fastBits` bits, indexed by the next `fastBits` input bits (codes are
        /// stored bit-reversed, as deflate packs them): symbol | length << 12; 0 = longer code.
        var fast = [UInt16](repeating: 0, count: 1 << Huffman.fastBits)
        static let fastBits = 9

        /// nil when the lengths over-subscribe the code space.
        init?(lengths: [UInt8]) {
            for l in lengths { counts[Int(l)] += 1 }
            counts[0] = 0
            var left = 1
            for len in 1...15 {
                left <<= 1
                left -= Int(counts[len])
                if left < 0 { return nil }
            }
            var offsets = [Int](repeating: 0, count: 16)
            for len in 1..<15 { offsets[len + 1] = offsets[len] + Int(counts[len]) }
            symbols = [UInt16](repeating: 0, count: lengths.count)
            var used = 0
            for (sym, l) in lengths.enumerated() where l != 0 {
                symbols[offsets[Int(l)]] = UInt16(sym)
                offsets[Int(l)] += 1
                used += 1
            }
            symbols.removeLast(lengths.count - used)
            // Canonical codes: consecutive within a length, the next length starts at (end) << 1.
            var code = 0, index = 0
            for len in 1...15 {
                for _ in 0..<Int(counts[len]) {
                    if len <= Huffman.fastBits {
                        var rev = 0
                        for b in 0..<len where code >> b & 1 == 1 { rev |= 1 << (len - 1 - b) }
                        let entry = symbols[index] | UInt16(len) << 12
                        var k = rev
                        while k < 1 << Huffman.fastBits { fast[k] = entry; k += 1 << len }
                    }
                    index += 1
                    code += 1
                }
                code <<= 1
            }
        }
    }

    static let lengthBase: [UInt16] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
    static let lengthExtra: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distBase: [UInt16] = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073,
                                     4097, 6145, 8193, 12289, 16385, 24577]
    static let distExtra: [UInt8] = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]
    static let codeLengthOrder = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

    static let fixedLitLen: Huffman = {
        var l = [UInt8](repeating: 8, count: 288)
        for i in 144..<256 { l[i] = 9 }
        for i in 256..<280 { l[i] = 7 }
        return Huffman(lengths: l)!
    }()
    static let fixedDist = Huffman(lengths: [UInt8](repeating: 5, count: 30))!

    struct Decoder {
        let input: [UInt8]
        let capacity: Int
        let errorOffset: UInt64
        let structure: String
        var out: [UInt8] = []
        var pos = 0
        var bitBuf: UInt64 = 0
        var bitCount = 0

        init(input: [UInt8], capacity: Int, errorOffset: UInt64, structure: String) {
            self.input = input
            self.capacity = capacity
            self.errorOffset = errorOffset
            self.structure = structure
            out.reserveCapacity(capacity)
        }

        func fail(_ why: String) -> FormatError {
            FormatError(QCOW2.formatName, structure, at: errorOffset + UInt64(pos), "deflate: \(why)")
        }

        var full: Bool { out.count >= capacity }

        mutating func bits(_ n: Int) throws -> UInt32 {
            while bitCount < n {
                guard pos < input.count else { throw fail("input ends inside a block") }
                bitBuf |= UInt64(input[pos]) << UInt64(bitCount)
                pos += 1
                bitCount += 8
            }
            let v = n == 0 ? 0 : UInt32(truncatingIfNeeded: bitBuf & ((1 << UInt64(n)) - 1))
            bitBuf >>= UInt64(n)
            bitCount -= n
            return v
        }

        mutating func decode(_ h: Huffman) throws -> Int {
            // Fast path: the next bits (zero-padded at the end of the input) index the table.
            while bitCount < 56 && pos < input.count {
                bitBuf |= UInt64(input[pos]) << UInt64(bitCount)
                pos += 1
                bitCount += 8
            }
            let e = h.fast[Int(bitBuf & UInt64((1 << Huffman.fastBits) - 1))]
            if e != 0 {
                let len = Int(e >> 12)
                if len <= bitCount {
                    bitBuf >>= UInt64(len)
                    bitCount -= len
                    return Int(e & 0xFFF)
                }
            }
            var code = 0, first = 0, index = 0
            for len in 1...15 {
                code |= Int(try bits(1))
                let count = Int(h.counts[len])
                if code - first < count { return Int(h.symbols[index + code - first]) }
                index += count
                first += count
                first <<= 1
                code <<= 1
            }
            throw fail("invalid Huffman code")
        }

        mutating func run() throws {
            var last = false
            while !last && !full {
                last = try bits(1) == 1
                switch try bits(2) {
                case 0: try stored()
                case 1: try codes(QCOW2Inflate.fixedLitLen, QCOW2Inflate.fixedDist)
                case 2:
                    let (l, d) = try dynamicTables()
                    try codes(l, d)
                default: throw fail("reserved block type 3")
                }
            }
        }

        mutating func stored() throws {
            bitBuf = 0
            bitCount = 0
            guard input.count - pos >= 4 else { throw fail("stored block header truncated") }
            let len = Int(input[pos]) | Int(input[pos + 1]) << 8
            let nlen = Int(input[pos + 2]) | Int(input[pos + 3]) << 8
            pos += 4
            guard len == (~nlen & 0xFFFF) else { throw fail("stored block length does not match its complement") }
            let n = min(len, capacity - out.count)
            guard input.count - pos >= n else { throw fail("stored block runs past the input") }
            out.append(contentsOf: input[pos..<pos + n])
            pos += len <= input.count - pos ? len : n
        }

        mutating func dynamicTables() throws -> (Huffman, Huffman) {
            let nlen = Int(try bits(5)) + 257, ndist = Int(try bits(5)) + 1, ncode = Int(try bits(4)) + 4
            guard nlen <= 286, ndist <= 30 else { throw fail("too many length (\(nlen)) or distance (\(ndist)) codes") }
            var cl = [UInt8](repeating: 0, count: 19)
            for i in 0..<ncode { cl[QCOW2Inflate.codeLengthOrder[i]] = UInt8(try bits(3)) }
            guard let clh = Huffman(lengths: cl) else { throw fail("over-subscribed code-length code") }
            var lengths = [UInt8](repeating: 0, count: nlen + ndist)
            var i = 0
            while i < nlen + ndist {
                let sym = try decode(clh)
                if sym < 16 { lengths[i] = UInt8(sym); i += 1; continue }
                var rep: Int, value: UInt8 = 0
                switch sym {
                case 16:
                    guard i > 0 else { throw fail("repeat with no previous length") }
                    value = lengths[i - 1]
                    rep = 3 + Int(try bits(2))
                case 17: rep = 3 + Int(try bits(3))
                default: rep = 11 + Int(try bits(7))
                }
                guard i + rep <= nlen + ndist else { throw fail("code lengths repeat past the table") }
                for _ in 0..<rep { lengths[i] = value; i += 1 }
            }
            guard lengths[256] != 0 else { throw fail("no end-of-block code") }
            guard let lit = Huffman(lengths: Array(lengths[0..<nlen])),
                  let dist = Huffman(lengths: Array(lengths[nlen...])) else { throw fail("over-subscribed literal/length or distance code") }
            return (lit, dist)
        }

        mutating func codes(_ lit: Huffman, _ dist: Huffman) throws {
            while !full {
                let sym = try decode(lit)
                if sym < 256 { out.append(UInt8(sym)); continue }
                if sym == 256 { return }
                let li = sym - 257
                guard li < 29 else { throw fail("invalid length symbol \(sym)") }
                let len = Int(QCOW2Inflate.lengthBase[li]) + Int(try bits(Int(QCOW2Inflate.lengthExtra[li])))
                let ds = try decode(dist)
                guard ds < 30 else { throw fail("invalid distance symbol \(ds)") }
                let d = Int(QCOW2Inflate.distBase[ds]) + Int(try bits(Int(QCOW2Inflate.distExtra[ds])))
                guard d <= out.count else { throw fail("distance \(d) reaches before the start of the output (\(out.count) bytes)") }
                let n = min(len, capacity - out.count)
                let from = out.count - d
                for k in 0..<n { out.append(out[from + k]) }
            }
        }
    }
}
