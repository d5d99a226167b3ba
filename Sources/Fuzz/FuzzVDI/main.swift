import DiskFormats

// libFuzzer harness for the VDI reader and checker (ci/test.d/20-fuzz-formats.sh).
@_cdecl("LLVMFuzzerTestOneInput") public func f(_ p: UnsafeRawPointer, _ n: Int) -> CInt { fuzzVDIOne(UnsafeRawBufferPointer(start: p, count: n)); return 0 }
