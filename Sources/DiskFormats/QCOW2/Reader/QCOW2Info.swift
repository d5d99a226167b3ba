import BlockCore

/// `info` for qcow2 files: recognised by the "QFI\xfb" magic, never by name.
public struct QCOW2InfoProbe: ImageInfoProbe {
    public init() {}
    public var formatName: String { QCOW2.formatName }
    public func matches(head: [UInt8]) -> Bool { head.starts(with: QCOW2.magic) }
    public func info(path: String) throws -> ImageInfo {
        let f = try QCOW2File.open(path: path)
        return try f.info(path: path)
    }
}

extension QCOW2File {
    /// The facts `bootlab info` prints (named as `qemu-img info` names them where it has them).
    public func info(path: String) throws -> ImageInfo {
        let h = header
        var fields: [InfoField] = [
            InfoField("virtual_size", .bytes(h.size)),
            InfoField("file_size", .bytes(fileSize)),
            InfoField("compat", .string(h.version >= 3 ? "1.1" : "0.10")),
            InfoField("cluster_size", .bytes(h.clusterSize)),
            InfoField("refcount_bits", .integer(h.refcountBits)),
            InfoField("compression_type", .string(h.compressionType == 0 ? "zlib" : "zstd")),
            InfoField("lazy_refcounts", .bool(h.compatibleFeatures & 1 != 0)),
            InfoField("corrupt", .bool(h.incompatibleFeatures & QCOW2.incompatCorrupt != 0)),
            InfoField("dirty", .bool(h.incompatibleFeatures & QCOW2.incompatDirty != 0)),
            InfoField("snapshots", .integer(UInt64(h.nbSnapshots))),
            InfoField("allocated_bytes", .bytes(try allocatedClusterCount() * clusterSize)),
        ]
        if let b = h.backingFile {
            fields.append(InfoField("backing_file", .string(b)))
            fields.append(InfoField("backing_format", h.backingFormat.map { .string($0) } ?? .null))
            fields.append(InfoField("backing_chain_depth", .integer(UInt64(backingChain.count))))
        }
        if h.extensions.contains(where: { $0.type == QCOW2.extPluginPointer }) {
            fields.append(InfoField("plugin_pointer_bytes", .bytes(UInt64((try? QCOW2PluginPointerArea.find(in: file)?.count) ?? 0))))
        }
        return ImageInfo(format: QCOW2.formatName, path: path, fields: fields)
    }
}
