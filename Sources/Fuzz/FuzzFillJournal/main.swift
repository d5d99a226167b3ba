import Exposure

// The replacement's progress journal as found on disk after a crash (or a foreign file under its
// name): replayed for a native file of 64 MiB, as the materializer does for its plugin.
@_cdecl("LLVMFuzzerTestOneInput") public func f(_ p: UnsafeRawPointer, _ n: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: p, count: n))
    if let s = try? FillJournal.replay(bytes, path: "fuzz", fileSize: 64 << 20) {
        // What replays must be self-consistent: a table of the header's chunks, a valid prefix
        // inside the input, the rest counted as torn.
        precondition(s.digests.count == s.header.chunkCount)
        precondition(s.validLength + s.tornBytes == UInt64(n) && s.validLength <= UInt64(n))
    }
    return 0
}
