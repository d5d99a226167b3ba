/// Sizes as qemu-img writes them: a number with an optional K/M/G/T/P/E suffix (powers of 1024),
/// optionally followed by `B` or `iB`; a bare number is bytes.
public enum ByteSize {
    public struct ParseError: Error, CustomStringConvertible {
        public let text: String
        public let reason: String
        public var description: String { "invalid size '\(text)': \(reason)" }
    }

    public static func parse(_ text: String) throws -> UInt64 {
        var t = text.trimmingWhitespace()
        guard !t.isEmpty else { throw ParseError(text: text, reason: "empty") }
        for suffix in ["iB", "ib", "B", "b"] where t.count > 1 && t.hasSuffix(suffix) {
            let stem = t.dropLast(suffix.count)
            if let last = stem.last, last.isLetter || suffix.count == 1 { t = String(stem); break }
        }
        var shift: UInt64 = 0
        if let last = t.last, last.isLetter {
            switch last {
            case "k", "K": shift = 10
            case "m", "M": shift = 20
            case "g", "G": shift = 30
            case "t", "T": shift = 40
            case "p", "P": shift = 50
            case "e", "E": shift = 60
            default: throw ParseError(text: text, reason: "unknown suffix '\(last)'")
            }
            t.removeLast()
        }
        guard let n = UInt64(t) else { throw ParseError(text: text, reason: "not a whole number") }
        let (v, overflow) = n.multipliedReportingOverflow(by: 1 << shift)
        guard !overflow else { throw ParseError(text: text, reason: "too large") }
        return v
    }

    /// Human form with a binary suffix, exact when possible ("1 GiB", "1.5 MiB", "512 B").
    public static func format(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var i = 0
        var v = Double(n)
        while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        if i == 0 { return "\(n) B" }
        let rounded = (v * 100).rounded() / 100
        if rounded == rounded.rounded() { return "\(Int(rounded)) \(units[i])" }
        return "\(rounded) \(units[i])"
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
