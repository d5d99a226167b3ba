import DiskFormats

// libFuzzer harness for the QCOW2 reader and checker (ci/test.d/20-fuzz-formats.sh).
@_cdecl("LLVMFuzzerTestOneInput") public func f(_ p: UnsafeRawPointer, _ n: Int) -> CInt { fuzzQCOW2One(UnsafeRawBufferPointer(start: p, count: n)); return 0 }
