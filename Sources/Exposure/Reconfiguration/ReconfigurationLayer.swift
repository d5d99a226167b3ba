import BlockCore
import Foundation

/// The reconfiguration layer of a plugin file: the OS edits that make the backed-up machine boot
/// on a target, kept beside the plugin and stacked between the composed disk and the VHDX view
/// (backup ▸ composed disk ▸ **reconfiguration layer** ▸ VHDX view), never in the backup.
///
/// On disk it is a `WriteOverlay` (`<plugin>.reconf` + `<plugin>.reconf.map`) over the composed
/// disk with 4 KiB units — the granularity the reconfiguration engine writes in. Its base identity
/// is derived from the backup's header digest and the composition, so a layer is never replayed
/// over another backup or another placement of the volume. Served read-only; only
/// `bootlab reconfigure` writes it. See docs/formats/plugin-file.md.
public enum ReconfigurationLayer {
    public static let unitSize: UInt32 = 4096

    /// `vm.vhdx` → `vm.vhdx.reconf` (the name recorded in the pointer is relative to the plugin).
    public static func defaultPath(forPlugin plugin: String) -> String { plugin + ".reconf" }

    /// The overlay's base identity: SHA-256 of the backup's header digest and the composition
    /// (sorted-key JSON), i.e. of everything the composed disk's bytes depend on.
    public static func identity(backupHeaderDigest: [UInt8], composition: PluginPointer.Composition) throws -> [UInt8] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return SHA256.hash(backupHeaderDigest + Array(try enc.encode(composition)))
    }

    /// The layer's digest: SHA-256 over a tag, then for each written run in ascending order its
    /// offset and length (u64 LE) and its bytes. It depends only on what the layer holds, not on
    /// the journal's record order, and costs a read of the layer's data only.
    public static func digest(_ layer: WriteOverlay) throws -> String {
        var h = SHA256()
        h.update(Array("bootlab reconfiguration layer v1".utf8))
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        for r in layer.writtenRanges {
            var head: [UInt8] = []
            head.appendLE64(r.lowerBound)
            head.appendLE64(UInt64(r.count))
            h.update(head)
            var off = r.lowerBound
            while off < r.upperBound {
                let n = Int(min(r.upperBound - off, UInt64(buffer.count)))
                try buffer.withUnsafeMutableBytes { try layer.read(at: off, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n])) }
                buffer.withUnsafeBytes { h.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                off += UInt64(n)
            }
        }
        return h.finalize().hex
    }

    /// Bytes the layer holds.
    public static func heldBytes(_ layer: WriteOverlay) -> UInt64 {
        layer.writtenRanges.reduce(0) { $0 + UInt64($1.count) }
    }
}

/// The layer as the reconfiguration engine wants it (docs/reconfigure.md, "Layer contract"):
/// only the units the layer holds are `.data`; everything else is `.absent` and falls through to
/// the image the engine inspects. Reads return the merged bytes, writes go to the layer.
public final class ReconfigurationLayerWriter: WritableBlockSource, @unchecked Sendable {
    // @unchecked: a thin wrapper over a thread-safe overlay.
    public let overlay: WriteOverlay

    public init(_ overlay: WriteOverlay) { self.overlay = overlay }

    public var size: UInt64 { overlay.size }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try overlay.read(at: offset, into: buffer)
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out: [Extent] = []
        var pos = r.lowerBound
        for w in overlay.writtenRanges where w.upperBound > r.lowerBound && w.lowerBound < r.upperBound {
            let lo = max(w.lowerBound, r.lowerBound), hi = min(w.upperBound, r.upperBound)
            if lo > pos { out.append(Extent(offset: pos, length: lo - pos, kind: .absent)) }
            out.append(Extent(offset: lo, length: hi - lo, kind: .data))
            pos = hi
        }
        if pos < r.upperBound { out.append(Extent(offset: pos, length: r.upperBound - pos, kind: .absent)) }
        return coalesce(out)
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        try overlay.write(at: offset, from: buffer)
    }

    public func flush() throws { try overlay.flush() }
}
