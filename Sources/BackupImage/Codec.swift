import BlockCore
import CZstd

/// zstd one-shot compression and decompression with pooled contexts (libzstd contexts are not
/// thread-safe; reusing them avoids an allocation per block).
final class ZstdPool: @unchecked Sendable {
    // @unchecked: the free lists are only touched under `lock`.
    private let lock = NSLockish()
    private var cctxs: [OpaquePointer] = []
    private var dctxs: [OpaquePointer] = []

    static let shared = ZstdPool()

    static func compressBound(_ n: Int) -> Int { Int(ZSTD_compressBound(n)) }

    /// Compressed bytes, or nil when compression does not make the block smaller.
    func compress(_ input: UnsafeRawBufferPointer, level: Int32) throws -> [UInt8]? {
        let c = lock.withLock { cctxs.popLast() } ?? ZSTD_createCCtx()!
        defer { lock.withLock { cctxs.append(c) } }
        var out = [UInt8](repeating: 0, count: ZstdPool.compressBound(input.count))
        let n = out.withUnsafeMutableBytes { o in
            ZSTD_compressCCtx(c, o.baseAddress, o.count, input.baseAddress, input.count, level)
        }
        if ZSTD_isError(n) != 0 {
            throw BackupImageError.invalidArgument("zstd compression failed: \(String(cString: ZSTD_getErrorName(n)))")
        }
        guard n < input.count else { return nil }
        out.removeLast(out.count - n)
        return out
    }

    /// Decompresses into `out`, which must be filled exactly; returns an error text otherwise.
    func decompress(_ input: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) -> String? {
        let d = lock.withLock { dctxs.popLast() } ?? ZSTD_createDCtx()!
        defer { lock.withLock { dctxs.append(d) } }
        let n = ZSTD_decompressDCtx(d, out.baseAddress, out.count, input.baseAddress, input.count)
        if ZSTD_isError(n) != 0 { return "zstd: \(String(cString: ZSTD_getErrorName(n)))" }
        if n != out.count { return "zstd frame holds \(n) bytes, expected \(out.count)" }
        return nil
    }

    deinit {
        for c in cctxs { ZSTD_freeCCtx(c) }
        for d in dctxs { ZSTD_freeDCtx(d) }
    }
}
