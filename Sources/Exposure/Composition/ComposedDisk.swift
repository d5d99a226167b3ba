import BlockCore

/// A whole disk synthesized around a volume-only backup: the disk-centric data the backup lacks
/// (an MBR with boot code and a partition table, a zero gap), the volume at its partition offset,
/// and a zero tail. Architecture: the "composed disk" layer, between the backup reader and the
/// reconfiguration layer.
public struct ComposedDisk: BlockSource {
    public let mbr: [UInt8]
    public let volume: any BlockSource
    public let partitionOffset: UInt64
    public let size: UInt64

    /// `mbr` is the 512-byte sector 0; the volume starts at `partitionOffset` (bytes, ≥ 512);
    /// the disk is `diskSize` bytes (≥ partitionOffset + volume.size).
    public init(mbr: [UInt8], volume: any BlockSource, partitionOffset: UInt64, diskSize: UInt64) throws {
        guard mbr.count == 512 else {
            throw FormatError("composition", "MBR", at: 0, "sector 0 must be 512 bytes, got \(mbr.count)")
        }
        guard partitionOffset >= 512, partitionOffset % 512 == 0 else {
            throw FormatError("composition", "partition", at: partitionOffset, "partition offset must be a non-zero multiple of 512")
        }
        let (volEnd, overflow) = partitionOffset.addingReportingOverflow(volume.size)
        guard !overflow, diskSize >= volEnd else {
            throw FormatError("composition", "partition", at: partitionOffset, "volume of \(volume.size) bytes does not fit a disk of \(diskSize) bytes")
        }
        self.mbr = mbr
        self.volume = volume
        self.partitionOffset = partitionOffset
        self.size = diskSize
    }

    /// The disk size a composition uses by default: partition end rounded up to 1 MiB (a cautious
    /// size every hypervisor and VHDX reader accepts).
    public static func defaultDiskSize(partitionOffset: UInt64, volumeSize: UInt64) -> UInt64 {
        let end = partitionOffset + volumeSize
        return (end + 0xFFFFF) / 0x100000 * 0x100000
    }

    private var volumeRange: Range<UInt64> { partitionOffset..<(partitionOffset + volume.size) }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        let end = offset + UInt64(buffer.count)
        var pos = offset
        while pos < end {
            let out = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(pos - offset)...])
            if pos < 512 {
                let n = Int(min(512, end) - pos)
                mbr.withUnsafeBytes { out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(pos)..<Int(pos) + n])) }
                pos += UInt64(n)
            } else if volumeRange.contains(pos) {
                let n = Int(min(volumeRange.upperBound, end) - pos)
                try volume.read(at: pos - partitionOffset, into: UnsafeMutableRawBufferPointer(rebasing: out[0..<n]))
                pos += UInt64(n)
            } else {
                let stop = pos < partitionOffset ? min(partitionOffset, end) : end
                let n = Int(stop - pos)
                out.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: n)
                pos = stop
            }
        }
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        guard !r.isEmpty else { return [] }
        var out: [Extent] = []
        let mbrPart = r.clamped(to: 0..<512)
        if !mbrPart.isEmpty { out.append(Extent(offset: mbrPart.lowerBound, length: UInt64(mbrPart.count), kind: .data)) }
        let gap = r.clamped(to: 512..<partitionOffset)
        if !gap.isEmpty { out.append(Extent(offset: gap.lowerBound, length: UInt64(gap.count), kind: .zero)) }
        let vol = r.clamped(to: volumeRange)
        if !vol.isEmpty {
            for e in try volume.extents(in: (vol.lowerBound - partitionOffset)..<(vol.upperBound - partitionOffset)) {
                out.append(Extent(offset: e.offset + partitionOffset, length: e.length, kind: e.kind))
            }
        }
        let tail = r.clamped(to: volumeRange.upperBound..<size)
        if !tail.isEmpty { out.append(Extent(offset: tail.lowerBound, length: UInt64(tail.count), kind: .zero)) }
        return coalesce(out)
    }
}
