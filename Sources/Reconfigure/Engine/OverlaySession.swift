import BlockCore
import Foundation
import Processes

/// A disk image QEMU can open: a path (or a `json:{…}` / `nbd+unix://` spec) and its format.
public struct DiskImage: Sendable, Equatable {
    public var path: String
    public var format: String
    public init(path: String, format: String) {
        self.path = path
        self.format = format
    }
}

/// One libguestfs appliance over a scratch qcow2 overlay of the image, with the caller's layer
/// applied on top; changes are copied back into the layer at the end.
///
/// How changes are captured: the overlay is a qcow2 whose backing file is the image (opened
/// read-only by QEMU: the base is never written) and whose clusters live in an **external data
/// file**, which qcow2 maps at the same offsets as the guest disk. After a clean shutdown,
/// `qemu-img map` lists the clusters the overlay owns (depth 0); their bytes are read straight
/// from the data file and written into the layer.
final class OverlaySession {
    let work: URL
    let overlay: String
    let dataFile: String
    let g: Guestfs
    let diskSize: UInt64
    static let clusterSize: UInt64 = 4096
    /// The disk as the appliance names it.
    let device = "/dev/sda"

    init(image: DiskImage, layer: BlockSource, workDirectory: URL?) throws {
        let base = workDirectory ?? FileManager.default.temporaryDirectory
        work = base.appendingPathComponent("bootlab-reconfigure-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        overlay = work.appendingPathComponent("overlay.qcow2").path
        dataFile = work.appendingPathComponent("overlay.data").path
        // qemu-img resolves a relative backing path against the overlay's directory.
        let backing = FileManager.default.fileExists(atPath: image.path) && !image.path.hasPrefix("/")
            ? FileManager.default.currentDirectoryPath + "/" + image.path : image.path
        try Command(["qemu-img", "create", "-q", "-f", "qcow2",
                 "-o", "data_file=\(dataFile),cluster_size=\(OverlaySession.clusterSize)",
                 "-b", backing, "-F", image.format, overlay]).run()
        let info = try JSONSerialization.jsonObject(with: Data(try Command(["qemu-img", "info", "--output=json", overlay]).run().stdout)) as? [String: Any]
        guard let vsize = (info?["virtual-size"] as? NSNumber)?.uint64Value else {
            throw ReconfigureError.guest("qemu-img info gave no virtual-size for \(image.path)")
        }
        diskSize = vsize
        guard layer.size == vsize else {
            throw ReconfigureError.layer("layer is \(layer.size) bytes, the disk is \(vsize)")
        }
        g = try Guestfs()
        try g.addDrive(overlay, format: "qcow2", readonly: false)
        try g.launch()
        // A disk the appliance cannot read (an NBD server failing its reads, say) would otherwise
        // look like a disk with no file system: say so, with libguestfs's own error.
        do {
            _ = try g.preadDevice(device, count: 512, at: 0)
        } catch {
            throw ReconfigureError.unreadable("libguestfs cannot read \(device) (\(image.path), \(image.format)): \(error)")
        }
        // Earlier runs' changes: the guest must see the disk as base ▸ layer.
        for e in try layer.allExtents() where e.kind == .data {
            var off = e.offset
            while off < e.end {
                let n = Int(min(e.end - off, 1 << 20))
                try g.pwriteDevice(device, try layer.read(at: off, count: n), at: off)
                off += UInt64(n)
            }
        }
    }

    deinit { try? FileManager.default.removeItem(at: work) }

    func temporaryPath(_ name: String) -> String { work.appendingPathComponent(name).path }

    /// What libguestfs sees on the disk, for an error that finds no operating system there:
    /// its size, partitions and every file system with its type (including `unknown`).
    func describeDisk() -> String {
        let partitions = (try? g.listPartitions()) ?? []
        let filesystems = ((try? g.listFilesystems()) ?? []).map { "\($0.device) \($0.type)" }
        return "\(device) (\(diskSize) bytes): partitions \(partitions.isEmpty ? "none" : partitions.joined(separator: ", "))"
            + "; file systems \(filesystems.isEmpty ? "none" : filesystems.joined(separator: ", "))"
    }

    /// Shuts the appliance down and copies the overlay's clusters that differ from the layer's
    /// current bytes (or that the layer did not hold) into the layer. Returns the ranges written.
    func finish(into layer: WritableBlockSource, copyChanges: Bool) throws -> [Extent] {
        try g.umountAll()
        try g.shutdown()
        guard copyChanges else { return [] }
        let json = try Command(["qemu-img", "map", "--output=json", overlay]).run().stdoutText
        guard let entries = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] else {
            throw ReconfigureError.layer("qemu-img map gave no entry list")
        }
        let data = try RawFile(path: dataFile)
        var written: [Extent] = []
        for entry in entries {
            guard (entry["depth"] as? NSNumber)?.intValue == 0,
                  let start = (entry["start"] as? NSNumber)?.uint64Value,
                  let length = (entry["length"] as? NSNumber)?.uint64Value else { continue }
            let isData = (entry["data"] as? NSNumber)?.boolValue ?? false
            var off = start
            while off < start + length {
                let n = Int(min(start + length - off, 1 << 20))
                let bytes = isData ? try data.read(at: off, count: n) : [UInt8](repeating: 0, count: n)
                try writeDifferences(bytes, at: off, into: layer, written: &written)
                off += UInt64(n)
            }
        }
        try layer.flush()
        return coalesce(written)
    }

    /// Writes the 4 KiB blocks of `bytes` that the layer does not already hold identically.
    private func writeDifferences(_ bytes: [UInt8], at offset: UInt64, into layer: WritableBlockSource, written: inout [Extent]) throws {
        let held = try layer.extents(in: offset..<offset + UInt64(bytes.count))
        let current = try layer.read(at: offset, count: bytes.count)
        let block = Int(OverlaySession.clusterSize)
        var i = 0
        while i < bytes.count {
            let n = min(block, bytes.count - i)
            let pos = offset + UInt64(i)
            let layerHolds = held.contains { $0.kind == .data && $0.offset <= pos && $0.end >= pos + UInt64(n) }
            if !layerHolds || current[i..<i + n] != bytes[i..<i + n] {
                try bytes[i..<i + n].withUnsafeBytes { try layer.write(at: pos, from: $0) }
                written.append(Extent(offset: pos, length: UInt64(n), kind: .data))
            }
            i += n
        }
    }
}
