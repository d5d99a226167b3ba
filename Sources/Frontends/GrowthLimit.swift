/// How far a writable exposed file may grow. A bound, so that a runaway writer gets EFBIG (and a
/// message on the server's stderr) instead of silently filling the overlay's file system.
public enum GrowthLimit {
    /// For a dynamic VHDX: the size of the same file fully allocated — every block of the virtual
    /// disk given a payload block after the metadata (MS-VHDX 2.5: payload blocks are 1 MiB
    /// aligned; a non-differencing disk has no sector bitmap blocks) — plus 1 MiB for a writer
    /// that rounds its end up (QEMU places a new block at the file length rounded up to 1 MiB).
    /// Never less than the file's current size plus one block.
    public static func vhdx(fileSize: UInt64, payloadStart: UInt64, blockSize: UInt64, virtualSize: UInt64) -> UInt64 {
        let mib: UInt64 = 1 << 20
        let bs = max(blockSize, 1)
        let blocks = virtualSize / bs + (virtualSize % bs == 0 ? 0 : 1)
        let full = alignUp(payloadStart, mib) + blocks * bs
        return max(full, alignUp(fileSize, mib) + bs) + mib
    }

    /// For the other native formats (VMDK grains, qcow2 clusters, VHD/VDI blocks), whose writers
    /// also append payload and, for qcow2, new L2 and refcount tables: every virtual byte stored
    /// once more past the current end, plus 1/64 for metadata and 16 MiB of slack.
    public static func native(fileSize: UInt64, virtualSize: UInt64) -> UInt64 {
        fileSize + virtualSize + virtualSize / 64 + (16 << 20)
    }

    private static func alignUp(_ v: UInt64, _ a: UInt64) -> UInt64 { (v + a - 1) / a * a }
}
