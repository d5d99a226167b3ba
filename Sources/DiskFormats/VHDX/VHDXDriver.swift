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
