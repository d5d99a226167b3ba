import BlockCore

/// qcow2 behind the format seam (`DiskFormatDriver`).
public struct QCOW2Driver: DiskFormatDriver {
    public init() {}
    public var name: String { QCOW2.formatName }
    /// One form: version 3 (compat 1.1), uncompressed, refcounts of 16 bits.
    public var subformats: [String] { ["v3"] }
    public var signatureLength: Int { QCOW2.magic.count }

    public func matches(head: [UInt8], tail: [UInt8]) -> Bool { head.starts(with: QCOW2.magic) }

    public func open(path: String) throws -> any BlockSource { try QCOW2File.open(path: path) }
    public func check(path: String) throws -> CheckReport { try QCOW2Check.run(path: path) }
    public func info(path: String) throws -> ImageInfo { try QCOW2InfoProbe().info(path: path) }

    public func view(of source: any BlockSource, options: NativeFormatOptions) throws -> any NativeFormatView {
        try QCOW2View(source: source, options: viewOptions(options))
    }

    /// The exposed form with the plugin pointer in BootLab's header extension and its area.
    public func pluginView(of source: any BlockSource, options: NativeFormatOptions, pointer: [UInt8]) throws -> any NativeFormatView {
        try QCOW2View(source: source, options: viewOptions(options, pluginPointer: pointer))
    }

    public func readPluginPointer(path: String) throws -> [UInt8]? {
        try QCOW2PluginPointerArea.find(in: RawFile(path: path))
    }

    /// A byte inside each structure the view synthesizes, found by parsing the file (skeleton
    /// only: works on a plugin file without its backup). Inverted, each is noticed: the header's
    /// version becomes unknown; a refcount table, L1 or L2 entry gets a reserved bit and an
    /// unaligned offset (corruption for qemu-img check and ours); the header cluster's refcount
    /// becomes 254 (a leak: qemu-img check exits 3, ours warns).
    public func structureSites(path: String) throws -> [String: UInt64] {
        let raw = try RawFile(path: path)
        let f = try QCOW2File(source: raw, name: path) { _, _ in ZeroSource(size: 0) }
        let h = f.header
        var sites: [String: UInt64] = [
            "header": 4 + 3,                                   // version: 3 becomes an unknown version
            "refcount table": h.refcountTableOffset + 6,       // first refcount block's offset
            "L1 entry": h.l1TableOffset + 6,                    // first L1 entry's offset field
        ]
        let rt0 = QCOW2BE.u64(try raw.read(at: h.refcountTableOffset, count: 8), 0) & QCOW2.offsetMask
        if rt0 != 0 { sites["refcount block"] = rt0 + 1 }    // the header cluster's refcount
        if let k = f.l1.firstIndex(where: { $0 & QCOW2.offsetMask != 0 }) {
            let l2 = f.l1[k] & QCOW2.offsetMask
            let t = try raw.read(at: l2, count: Int(h.clusterSize))
            if let j = (0..<Int(h.l2Entries)).first(where: { QCOW2BE.u64(t, 8 * $0) != 0 }) {
                sites["L2 entry"] = l2 + UInt64(j) * 8 + 6       // a byte of the data offset
            }
        }
        return sites
    }

    /// The common options mapped onto qcow2's: `cluster_size` (`allocationUnit`); `compat`
    /// accepts only 1.1 (v3), what the view writes.
    public func viewOptions(_ options: NativeFormatOptions, pluginPointer: [UInt8]? = nil) throws -> QCOW2ViewOptions {
        let unknown = options.unknownKeys(allowed: ["compat"])
        guard unknown.isEmpty else {
            throw NativeFormatOptionError(format: name, reason: "unknown option(s) \(unknown.joined(separator: ", "))")
        }
        if let s = options.subformat, !subformats.contains(s) {
            throw NativeFormatOptionError(format: name, reason: "subformat \(s) is not one of \(subformats.joined(separator: ", "))")
        }
        if let c = options.keys["compat"], c != "1.1", c != "v3" {
            throw NativeFormatOptionError(format: name, reason: "compat \(c): only 1.1 (version 3) is written")
        }
        // qcow2 stores no sector size (its header has none; docs/formats/qcow2.md): the disk is
        // bytes, and the hypervisor presents them with the sector size it is told (QEMU:
        // `logical_block_size=4096` on virtio-blk / scsi-hd). So a 4096-byte composition (a 4Kn
        // GPT) is accepted, and the VM must be configured to present 4096-byte sectors
        // (docs/uefi.md, "4 KiB sectors"); anything else is not a sector size a disk has.
        guard [512, 4096].contains(options.logicalSectorSize) else {
            throw NativeFormatOptionError(format: name, reason: "qcow2 has no sector size field; logical_sector_size \(options.logicalSectorSize) is neither 512 nor 4096 (the hypervisor presents the sectors)")
        }
        var o = QCOW2ViewOptions(pluginPointer: pluginPointer)
        if let u = options.allocationUnit ?? options.keys["cluster_size"].flatMap({ try? ByteSize.parse($0) }) {
            do { o.clusterBits = try QCOW2ViewOptions.clusterBits(forClusterSize: u) } catch {
                throw NativeFormatOptionError(format: name, reason: "cluster_size \(u) must be a power of two from 512 to 2M")
            }
        } else if let s = options.keys["cluster_size"] {
            throw NativeFormatOptionError(format: name, reason: "cluster_size \(s) is not a size")
        }
        return o
    }
}
