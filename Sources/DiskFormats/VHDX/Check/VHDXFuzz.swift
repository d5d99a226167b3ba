import BlockCore

/// One fuzz input through the parser, the reader and `check`: any error is fine, a crash, hang
/// or runaway allocation is not. Lives in the library so the regression tests run the same path.
///
/// Inputs shorter than 1 MiB are zero-extended past their end (seed files are stored with their
/// zero tail cut off), so small inputs still reach the region tables and metadata.
public func fuzzVHDXOne(_ input: UnsafeRawBufferPointer) {
    var bytes = Array(input)
    if bytes.count < Int(VHDX.headerSectionSize) + 0x300000 && bytes.count >= 8 {
        bytes += [UInt8](repeating: 0, count: Int(VHDX.headerSectionSize) + 0x300000 - bytes.count)
    }
    let src = MemorySource(bytes)
    if let f = try? VHDXFile(source: src) {
        let n = Int(min(f.size, 1 << 20))
        _ = try? f.read(at: 0, count: n)
        if f.size > 4096 { _ = try? f.read(at: f.size - 4096, count: 4096) }
        _ = try? f.extents(in: 0..<min(f.size, 64 << 20))
        _ = f.allocatedBytes
    }
    _ = try? VHDXCheck.run(source: src)
}
