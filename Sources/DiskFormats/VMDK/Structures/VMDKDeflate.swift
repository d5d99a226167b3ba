import BlockCore

/// zlib streams (RFC 1950) around DEFLATE (RFC 1951), for stream-optimized grains, written from
/// the RFCs: an inflater for every block type, and a writer of *stored* blocks (uncompressed
/// DEFLATE blocks are a valid zlib stream every inflater reads; DiskFormats links no zlib).
public enum VMDKDeflate {
    public struct Error: Swift.Error, Equatable, CustomStringConvertible {
        public let reason: String
        public var description: String { reason }
    }

    public static func adler32(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var a: UInt32 = 1, b: UInt32 = 0
        var i = 0
        while i < bytes.count {
            let n = min(5552, bytes.count - i)  // largest run before the sums can overflow 32 bits
            for j in i..<i + n { a &+= UInt32(bytes[j]); b &+= a }
            a %= 65521; b %= 65521
            i += n
        }
        return b << 16 | a
    }

    /// A zlib stream holding `data` in stored blocks (at most 65535 bytes each).
    public static func zlibStored(_ data: UnsafeRawBufferPointer) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]  // CM 8, 32 KiB window, FLEVEL 0; (0x7801 % 31 == 0)
        out.reserveCapacity(data.count + data.count / 65535 * 5 + 16)
        var pos = 0
        repeat {
            let n = min(65535, data.count - pos)
            out.append(pos + n == data.count ? 1 : 0)  // BFINAL, BTYPE 00
            out.appendLE16(UInt16(n))
            out.appendLE16(~UInt16(n))
            out += UnsafeRawBufferPointer(rebasing: data[pos..<pos + n])
            pos += n
        } while pos < data.count
        let a = adler32(data)
        out += [UInt8(a >> 24), UInt8((a >> 16) & 0xff), UInt8((a >> 8) & 0xff), UInt8(a & 0xff)]
        return out
    }

    /// Inflates a zlib stream into at most `limit` bytes (more is an error), checking the Adler-32.
    public static func inflateZlib(_ input: [UInt8], limit: Int) throws(Error) -> [UInt8] {
        guard input.count >= 6 else { throw Error(reason: "zlib stream of \(input.count) bytes is too short") }
        let cmf = input[0], flg = input[1]
        guard cmf & 0x0f == 8, cmf >> 4 <= 7 else { throw Error(reason: "zlib header 0x\([cmf].hex) is not DEFLATE with a window up to 32 KiB") }
        guard (UInt16(cmf) << 8 | UInt16(flg)) % 31 == 0 else { throw Error(reason: "zlib header check bits are wrong") }
        guard flg & 0x20 == 0 else { throw Error(reason: "zlib stream needs a preset dictionary") }
        var inf = Inflater(input: input, start: 2, limit: limit)
        try inf.run()
        let p = inf.bytePositionAfterAlign()
        guard p + 4 <= input.count else { throw Error(reason: "zlib stream ends before its Adler-32") }
        let stored = UInt32(input[p]) << 24 | UInt32(input[p + 1]) << 16 | UInt32(input[p + 2]) << 8 | UInt32(input[p + 3])
        let computed = inf.out.withUnsafeBytes { adler32($0) }
        guard stored == computed else { throw Error(reason: "Adler-32 0x\(String(stored, radix: 16)) does not match the data (0x\(String(computed, radix: 16)))") }
        return inf.out
    }

    /// A canonical Huffman code: how many codes have each length, and the symbols in code order.
    struct Huffman {
        var counts = [Int](repeating: 0, count: 16)
        var symbols: [Int]

        init(lengths: ArraySlice<Int>) throws(Error) {
            symbols = [Int](repeating: 0, count: lengths.count)
            for l in lengths { counts[l] += 1 }
            var left = 1
            for len in 1..<16 {
                left <<= 1
                left -= counts[len]
                if left < 0 { throw Error(reason: "over-subscribed Huffman code") }
            }
            var offsets = [Int](repeating: 0, count: 16)
            for len in 1..<15 { offsets[len + 1] = offsets[len] + counts[len] }
            for (sym, l) in lengths.enumerated() where l != 0 {
                symbols[offsets[l]] = sym
                offsets[l] += 1
            }
            counts[0] = 0
        }
    }

    struct Inflater {
        let input: [UInt8]
        var pos: Int
        var bitBuf: UInt32 = 0
        var bitCount = 0
        let limit: Int
        var out: [UInt8] = []

        init(input: [UInt8], start: Int, limit: Int) {
            self.input = input
            pos = start
            self.limit = limit
            out.reserveCapacity(min(limit, 1 << 20))
        }

        mutating func bits(_ n: Int) throws(Error) -> Int {
            while bitCount < n {
                guard pos < input.count else { throw Error(reason: "DEFLATE data ends early") }
                bitBuf |= UInt32(input[pos]) << UInt32(bitCount)
                pos += 1
                bitCount += 8
            }
            let v = Int(bitBuf & ((1 << UInt32(n)) - 1))
            bitBuf = n == 32 ? 0 : bitBuf >> UInt32(n)
            bitCount -= n
            return v
        }

        mutating func bytePositionAfterAlign() -> Int {
            pos - bitCount / 8
        }

        mutating func decode(_ h: Huffman) throws(Error) -> Int {
            var code = 0, first = 0, index = 0
            for len in 1..<16 {
                code |= try bits(1)
                let count = h.counts[len]
                if code - first < count { return h.symbols[index + code - first] }
                index += count
                first = (first + count) << 1
                code <<= 1
            }
            throw Error(reason: "invalid Huffman code")
        }

        static let lengthBase = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
        static let lengthExtra = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
        static let distBase = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073,
                               4097, 6145, 8193, 12289, 16385, 24577]
        static let distExtra = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]
        static let fixed: (Huffman, Huffman) = {
            var l = [Int](repeating: 8, count: 288)
            for i in 144..<256 { l[i] = 9 }
            for i in 256..<280 { l[i] = 7 }
            return (try! Huffman(lengths: l[...]), try! Huffman(lengths: [Int](repeating: 5, count: 30)[...]))
        }()

        mutating func run() throws(Error) {
            var last = 0
            while last == 0 {
                last = try bits(1)
                switch try bits(2) {
                case 0: try stored()
                case 1: try codes(Self.fixed.0, Self.fixed.1)
                case 2:
                    let (l, d) = try dynamicTables()
                    try codes(l, d)
                default: throw Error(reason: "invalid DEFLATE block type 3")
                }
            }
        }

        mutating func stored() throws(Error) {
            bitBuf = 0
            bitCount = 0
            guard pos + 4 <= input.count else { throw Error(reason: "stored block header ends early") }
            let len = Int(input[pos]) | Int(input[pos + 1]) << 8
            let nlen = Int(input[pos + 2]) | Int(input[pos + 3]) << 8
            pos += 4
            guard len == ~nlen & 0xffff else { throw Error(reason: "stored block length and its complement disagree") }
            guard pos + len <= input.count else { throw Error(reason: "stored block runs past the data") }
            guard out.count + len <= limit else { throw Error(reason: "inflated data exceeds \(limit) bytes") }
            out += input[pos..<pos + len]
            pos += len
        }

        mutating func dynamicTables() throws(Error) -> (Huffman, Huffman) {
            let nlen = try bits(5) + 257, ndist = try bits(5) + 1, ncode = try bits(4) + 4
            guard nlen <= 286, ndist <= 30 else { throw Error(reason: "dynamic block with too many codes") }
            let order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
            var cl = [Int](repeating: 0, count: 19)
            for i in 0..<ncode { cl[order[i]] = try bits(3) }
            let clCode = try Huffman(lengths: cl[...])
            var lengths = [Int](repeating: 0, count: nlen + ndist)
            var i = 0
            while i < nlen + ndist {
                let sym = try decode(clCode)
                if sym < 16 { lengths[i] = sym; i += 1; continue }
                var value = 0, rep: Int
                switch sym {
                case 16:
                    guard i > 0 else { throw Error(reason: "repeat of a length with none before it") }
                    value = lengths[i - 1]
                    rep = 3 + (try bits(2))
                case 17: rep = 3 + (try bits(3))
                default: rep = 11 + (try bits(7))
                }
                guard i + rep <= nlen + ndist else { throw Error(reason: "code lengths overrun") }
                for _ in 0..<rep { lengths[i] = value; i += 1 }
            }
            guard lengths[256] != 0 else { throw Error(reason: "no end-of-block code") }
            return (try Huffman(lengths: lengths[0..<nlen]), try Huffman(lengths: lengths[nlen...]))
        }

        mutating func codes(_ lit: Huffman, _ dist: Huffman) throws(Error) {
            while true {
                let sym = try decode(lit)
                if sym < 256 {
                    guard out.count < limit else { throw Error(reason: "inflated data exceeds \(limit) bytes") }
                    out.append(UInt8(sym))
                } else if sym == 256 {
                    return
                } else {
                    let li = sym - 257
                    guard li < 29 else { throw Error(reason: "invalid length symbol \(sym)") }
                    let len = Self.lengthBase[li] + (try bits(Self.lengthExtra[li]))
                    let ds = try decode(dist)
                    guard ds < 30 else { throw Error(reason: "invalid distance symbol \(ds)") }
                    let d = Self.distBase[ds] + (try bits(Self.distExtra[ds]))
                    guard d <= out.count else { throw Error(reason: "distance \(d) reaches before the start of the data") }
                    guard out.count + len <= limit else { throw Error(reason: "inflated data exceeds \(limit) bytes") }
                    let start = out.count - d
                    for k in 0..<len { out.append(out[start + k]) }
                }
            }
        }
    }
}

extension VMDKDeflate {
    /// A zlib stream of `data` compressed with one fixed-Huffman DEFLATE block (RFC 1951 §3.2.6)
    /// over greedy LZ77 matches (hash of 3 bytes, chains bounded), or stored blocks when that is
    /// not smaller. Deterministic: the same bytes always give the same stream.
    public static func zlibCompressed(_ data: UnsafeRawBufferPointer) -> [UInt8] {
        let stored = zlibStored(data)
        guard data.count >= 16 else { return stored }
        var w = BitWriter()
        w.out.reserveCapacity(data.count / 2 + 64)
        w.out += [0x78, 0x01]
        w.put(1, 1)  // BFINAL
        w.put(1, 2)  // BTYPE 01: fixed Huffman
        let n = data.count
        let hashBits = 15, hashSize = 1 << hashBits, window = 32768, maxChain = 32
        var head = [Int32](repeating: -1, count: hashSize)
        var prev = [Int32](repeating: -1, count: min(n, 1 << 22))
        func hash(_ i: Int) -> Int {
            let v = UInt32(data[i]) | UInt32(data[i + 1]) << 8 | UInt32(data[i + 2]) << 16
            return Int((v &* 2_654_435_761) >> UInt32(32 - hashBits))
        }
        func insert(_ i: Int) {
            guard i + 2 < n, i < prev.count else { return }
            let h = hash(i)
            prev[i] = head[h]
            head[h] = Int32(i)
        }
        var i = 0
        while i < n {
            var bestLen = 0, bestDist = 0
            if i + 2 < n, i < prev.count {
                var cand = Int(head[hash(i)])
                var chain = 0
                let maxLen = min(258, n - i)
                while cand >= 0, i - cand <= window, chain < maxChain {
                    if data[cand + bestLen] == data[i + bestLen] || bestLen == 0 {
                        var l = 0
                        while l < maxLen && data[cand + l] == data[i + l] { l += 1 }
                        if l > bestLen { bestLen = l; bestDist = i - cand; if l == maxLen { break } }
                    }
                    cand = Int(prev[cand])
                    chain += 1
                }
            }
            if bestLen >= 3 {
                w.putLength(bestLen)
                w.putDistance(bestDist)
                for k in i..<i + bestLen { insert(k) }
                i += bestLen
            } else {
                w.putLiteral(Int(data[i]))
                insert(i)
                i += 1
            }
            if w.out.count >= stored.count { return stored }
        }
        w.putLiteral(256)
        w.flush()
        let a = adler32(data)
        w.out += [UInt8(a >> 24), UInt8((a >> 16) & 0xff), UInt8((a >> 8) & 0xff), UInt8(a & 0xff)]
        return w.out.count < stored.count ? w.out : stored
    }

    /// DEFLATE's bit order: fields LSB first, Huffman codes MSB first (hence `putCode` reverses).
    struct BitWriter {
        var out: [UInt8] = []
        var acc: UInt64 = 0
        var count = 0

        mutating func put(_ value: Int, _ bits: Int) {
            acc |= UInt64(value) << UInt64(count)
            count += bits
            while count >= 8 {
                out.append(UInt8(truncatingIfNeeded: acc))
                acc >>= 8
                count -= 8
            }
        }

        mutating func flush() {
            if count > 0 { out.append(UInt8(truncatingIfNeeded: acc)) }
            acc = 0
            count = 0
        }

        mutating func putCode(_ code: Int, _ bits: Int) {
            var r = 0
            for k in 0..<bits where code & (1 << k) != 0 { r |= 1 << (bits - 1 - k) }
            put(r, bits)
        }

        /// The fixed literal/length code of symbol `s` (0…287).
        mutating func putLiteral(_ s: Int) {
            switch s {
            case 0...143: putCode(0x30 + s, 8)
            case 144...255: putCode(0x190 + s - 144, 9)
            case 256...279: putCode(s - 256, 7)
            default: putCode(0xC0 + s - 280, 8)
            }
        }

        mutating func putLength(_ len: Int) {
            let base = Inflater.lengthBase, extra = Inflater.lengthExtra
            var k = 28
            while base[k] > len { k -= 1 }
            putLiteral(257 + k)
            if extra[k] > 0 { put(len - base[k], extra[k]) }
        }

        mutating func putDistance(_ d: Int) {
            let base = Inflater.distBase, extra = Inflater.distExtra
            var k = 29
            while base[k] > d { k -= 1 }
            putCode(k, 5)
            if extra[k] > 0 { put(d - base[k], extra[k]) }
        }
    }
}
