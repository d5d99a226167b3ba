import BlockCore
import DiskFormats

@_cdecl("LLVMFuzzerTestOneInput") public func f(_ p: UnsafeRawPointer, _ n: Int) -> CInt { fuzzVHDXOne(UnsafeRawBufferPointer(start: p, count: n)); return 0 }
