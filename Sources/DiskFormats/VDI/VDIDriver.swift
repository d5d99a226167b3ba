import BlockCore

/// VDI (VirtualBox) behind the format seam (`DiskFormatDriver`): dynamic images.
public struct VDIDriver: DiskFormatDriver {
    public init() {}
    public var name: String { VDI.formatName }
    public var subformats: [String] { ["dynamic"] }
    /// The whole header sector: its signature lives at 0x40.
    public var signatureLength: Int { VDI.headerAreaSize }

    public func matches(head: [UInt8], tail: [UInt8]) -> Bool {
        head.count >= VDI.signatureOffset + 8 && head.le32(VDI.signatureOffset) == VDI.signature
    }

    public func open(path: String) throws -> any BlockSource { try VDIFile.open(path: path) }
    public func check(path: String) throws -> CheckReport { try VDICheck.run(path: path) }
    public func info(path: String) throws -> ImageInfo { try VDIFile.open(path: path).info(path: path) }

    public func view(of source: any BlockSource, options: NativeFormatOptions) throws -> any NativeFormatView {
        try VDIView(source: source, options: synthesisOptions(options))
    }

    public func pluginView(of source: any BlockSource, options: NativeFormatOptions, pointer: [UInt8]) throws -> any NativeFormatView {
        var o = try synthesisOptions(options)
        o.pointer = pointer
        return try VDIView(source: source, options: o)
    }

    /// The blob in a VDI laid out by BootLab (block map at or past the area's end), nil for any
    /// other VDI or an empty area. Reads the header and the area only.
    public func readPluginPointer(path: String) throws -> [UInt8]? {
        let f = try VDIFile.open(path: path)
        guard UInt64(f.header.blockMapOffset) >= VDILayout.pointerAreaOffset + UInt64(VDILayout.pointerAreaLength) else { return nil }
        let area = try RawFile(path: path).read(at: VDILayout.pointerAreaOffset, count: VDILayout.pointerAreaLength)
        return try PointerAreaFrame.parse(area, at: VDILayout.pointerAreaOffset, format: name)
    }

    /// A byte inside each structure: the header's block size (QEMU refuses any other than
    /// 1 MiB) and the first allocated block map entry (its second byte: a slot past the image).
    public func structureSites(path: String) throws -> [String: UInt64] {
        let f = try VDIFile.open(path: path)
        var sites: [String: UInt64] = ["header": 0x178 + 2]
        if let i = f.blockMap.firstIndex(where: VDI.isAllocated) {
            sites["block map entry"] = UInt64(f.header.blockMapOffset) + UInt64(i) * 4 + 1
        }
        return sites
    }

    public func synthesisOptions(_ options: NativeFormatOptions) throws -> VDISynthesisOptions {
        let unknown = options.unknownKeys(allowed: [])
        guard unknown.isEmpty else {
            throw NativeFormatOptionError(format: name, reason: "unknown option(s) \(unknown.joined(separator: ", "))")
        }
        if let s = options.subformat, !subformats.contains(s) {
            throw NativeFormatOptionError(format: name, reason: "subformat \(s) is not one of \(subformats.joined(separator: ", "))")
        }
        guard options.logicalSectorSize == 512 else {
            throw NativeFormatOptionError(format: name, reason: "VDI has 512-byte sectors only, not \(options.logicalSectorSize)")
        }
        if let u = options.allocationUnit, u != VDI.mib {
            throw NativeFormatOptionError(format: name, reason: "block size \(u) is not 1 MiB (the only size QEMU opens)")
        }
        return VDISynthesisOptions(seed: options.seed)
    }
}
