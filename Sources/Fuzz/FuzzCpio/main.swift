import Archives
import Reconfigure

@_cdecl("LLVMFuzzerTestOneInput") public func f(_ p: UnsafeRawPointer, _ n: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: p, count: n))
    if let (entries, _) = try? Cpio.read(bytes) { _ = Cpio.write(entries) }
    _ = try? ModuleDependencies(text: String(decoding: bytes, as: UTF8.self)).loadOrder(for: ["sd_mod", "ata_piix"])
    _ = try? GrubBootCode.isInstalled(sector0: bytes) { lba in Array(bytes.dropFirst(Int(truncatingIfNeeded: min(lba, 1 << 20)) * 512).prefix(512)) }
    return 0
}
