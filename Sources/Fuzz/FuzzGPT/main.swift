import DiskFormats

// libFuzzer harness for the GPT reader and writer (ci/test.d/20-fuzz-formats.sh).
@_cdecl("LLVMFuzzerTestOneInput") public func f(_ p: UnsafeRawPointer, _ n: Int) -> CInt { fuzzGPTOne(UnsafeRawBufferPointer(start: p, count: n)); return 0 }
