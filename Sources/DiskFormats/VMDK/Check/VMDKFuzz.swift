import BlockCore

/// One fuzz input through the reader and `check`: the input is a VMDK sparse extent file as is
/// (its structures are compact, unlike VHDX's). Any error is fine; a crash, hang or runaway
/// allocation is not. Lives in the library so regression tests run the same path.
public func fuzzVMDKOne(_ input: UnsafeRawBufferPointer) {
    let src = MemorySource(Array(input))
    if let f = try? VMDKFile(source: src) {
        _ = try? f.read(at: 0, count: Int(min(f.size, 1 << 20)))
        if f.size > 4096 { _ = try? f.read(at: f.size - 4096, count: 4096) }
        _ = try? f.extents(in: 0..<min(f.size, 64 << 20))
        _ = try? f.info(path: "<fuzz>")
    }
    _ = try? VMDKCheck.run(source: src)
    // The same bytes as a text descriptor (its extents are not opened: no files).
    _ = try? VMDKDescriptor.parse(Array(input.prefix(1 << 20)), at: 0)
}
