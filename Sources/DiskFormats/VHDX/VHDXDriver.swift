import BlockCore

/// VHDX behind the format seam (`DiskFormatDriver`).
public struct VHDXDriver: DiskFormatDriver {
    public init() {}
    public var name: String { VHDXView.formatName }
    public var subformats: [String] { ["dynamic"] }
    public var signatureLength: Int { VHDX.fileSignature.count }

    public func matches(head: [UInt8], tail: [UInt8]) -> Bool {
        // MS-VHDX 2.2.1: the file type identifier starts with the 8 bytes "vhdxfile".
        head.starts(with: VHDX.fileSignature)
    }

    public func open(path: String) throws -> any BlockSource { try VHDXFile.open(path: path) }
    public func check(path: String) throws -> CheckReport { try VHDXCheck.run(path: path) }
    public func info(path: String) throws -> ImageInfo { try VHDXInfoProbe().info(path: path) }

    public func view(of source: any BlockSource, options: NativeFormatOptions) throws -> any NativeFormatView {
        try VHDXView(source: source, options: synthesisOptions(options))
    }

    public func pluginView(of source: any BlockSource, options: NativeFormatOptions, pointer: [UInt8]) throws -> any NativeFormatView {
        var o = try synthesisOptions(options)
        o.userMetadata = [VHDXUserMetadataItem(id: PluginPointerPlacement.vhdxItemID, bytes: pointer)]
        return try VHDXView(source: source, options: o)
    }

    public func readPluginPointer(path: String) throws -> [UInt8]? {
        try VHDXFile.open(path: path).metadata.userItems.first { $0.itemID == PluginPointerPlacement.vhdxItemID }?.data
    }

    /// MS-VHDX 2.2: header 1 at 64 KiB, region table 1 at 192 KiB; the metadata table at the
    /// metadata region's start; the first payload BAT entry that points at data.
    public func structureSites(path: String) throws -> [String: UInt64] {
        let f = try VHDXFile.open(path: path)
        var sites: [String: UInt64] = [
            "header": 64 << 10 + 8,               // header 1, past signature and checksum: the sequence number
            "region table": 192 << 10 + 16,       // region table 1, first entry's GUID
            "metadata table": (f.regionTable.entry(VHDX.metadataRegion)?.fileOffset ?? 0) + 32,
        ]
        if let i = f.batEntries.firstIndex(where: { VHDX.batOffset($0) != 0 }) {
            sites["BAT entry"] = f.batOffset + UInt64(i) * 8 + 3  // a byte of the file offset field
        }
        return sites
    }

    public func create(path: String, virtualSize: UInt64, options: NativeFormatOptions) throws {
        let o = try synthesisOptions(options)
        _ = try VHDXFile.createDynamic(path: path, virtualSize: virtualSize, blockSize: o.blockSize,
                                       logicalSectorSize: o.logicalSectorSize, physicalSectorSize: o.physicalSectorSize,
                                       seed: Array((options.keys["seed"] ?? "").utf8))
    }

    /// The common options mapped onto VHDX's own; `physical_sector_size` is VHDX's extra key.
    public func synthesisOptions(_ options: NativeFormatOptions) throws -> VHDXSynthesisOptions {
        let unknown = options.unknownKeys(allowed: ["physical_sector_size"])
        guard unknown.isEmpty else {
            throw NativeFormatOptionError(format: name, reason: "unknown option(s) \(unknown.joined(separator: ", "))")
        }
        if let s = options.subformat, !subformats.contains(s) {
            throw NativeFormatOptionError(format: name, reason: "subformat \(s) is not one of \(subformats.joined(separator: ", "))")
        }
        var o = VHDXSynthesisOptions(logicalSectorSize: options.logicalSectorSize, seed: options.seed)
        if let u = options.allocationUnit {
            guard let b = UInt32(exactly: u) else { throw VHDXSynthesisError.invalidBlockSize(UInt32.max) }
            o.blockSize = b
        }
        if let p = options.keys["physical_sector_size"] {
            guard let v = UInt32(p), v == 512 || v == 4096 else {
                throw NativeFormatOptionError(format: name, reason: "physical_sector_size must be 512 or 4096, not \(p)")
            }
            o.physicalSectorSize = v
        }
        return o
    }
}
