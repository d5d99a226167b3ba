import BlockCore

/// One fuzz input (a `SectorRecordFuzzLayout` description of a sparse file) through the VDI
/// reader and `check`: any error is fine; a crash, hang or runaway allocation is not.
public func fuzzVDIOne(_ input: UnsafeRawBufferPointer) {
    let src = SectorRecordFuzzLayout.unpack(Array(input))
    if let f = try? VDIFile(source: src) {
        _ = try? f.read(at: 0, count: Int(min(f.size, 1 << 20)))
        if f.size > 4096 { _ = try? f.read(at: f.size - 4096, count: 4096) }
        _ = try? f.extents(in: 0..<min(f.size, 64 << 20))
        _ = f.allocatedBytes
    }
    _ = try? VDICheck.run(source: src)
}
