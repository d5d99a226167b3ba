import BlockCore

/// One fuzz input through the header parser, the reader (without backing files: a named one is
/// replaced by zeros of the image's size, so the mapping code still runs) and `check`: any error
/// is fine, a crash, hang or runaway allocation is not. The input is the qcow2 file itself
/// (seeds use small clusters, so whole files stay small).
public func fuzzQCOW2One(_ input: UnsafeRawBufferPointer) {
    let src = MemorySource(Array(input))
    if let f = try? QCOW2File(source: src, name: "<fuzz>", backingOpener: { _, _ in ZeroSource(size: 1 << 20, kind: .absent) }) {
        let n = Int(min(f.size, 1 << 20))
        _ = try? f.read(at: 0, count: n)
        if f.size > 4096 { _ = try? f.read(at: f.size - 4096, count: 4096) }
        _ = try? f.extents(in: 0..<min(f.size, 64 << 20))
        _ = try? f.info(path: "<fuzz>")
    }
    _ = try? QCOW2Check.run(source: src)
    _ = try? QCOW2PluginPointerArea.find(in: src)
}
