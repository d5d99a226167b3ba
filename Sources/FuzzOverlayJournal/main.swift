import Exposure

@_cdecl("LLVMFuzzerTestOneInput") public func f(_ p: UnsafeRawPointer, _ n: Int) -> CInt {
    _ = try? WriteOverlay.checkJournal(Array(UnsafeRawBufferPointer(start: p, count: n)))
    return 0
}
