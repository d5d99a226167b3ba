import Exposure

@_cdecl("LLVMFuzzerTestOneInput") public func f(_ p: UnsafeRawPointer, _ n: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: p, count: n))
    if (try? WriteOverlay.checkJournal(bytes)) != nil {
        // A journal that replays must also yield a size within its header's bounds.
        _ = try? WriteOverlay.journaledSize(bytes)
    }
    return 0
}
