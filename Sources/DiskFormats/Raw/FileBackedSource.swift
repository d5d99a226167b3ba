import BlockCore

// `FileSpan` and `FileBackedSource` (with `RawFile`'s conformance) live in BlockCore, where the
// pass-through layers forward them too.

extension PaddedSource: FileBackedSource {
    public func fileSpans(in range: Range<UInt64>) -> [FileSpan]? {
        guard range.upperBound <= size, let fb = base as? any FileBackedSource else { return nil }
        var out: [FileSpan] = []
        if range.lowerBound < base.size {
            guard let spans = fb.fileSpans(in: range.lowerBound..<min(range.upperBound, base.size)) else { return nil }
            out = spans
        }
        let padLo = max(range.lowerBound, base.size)
        if padLo < range.upperBound { out.append(.zeros(length: range.upperBound - padLo)) }
        return out
    }
}
