import BlockCore

/// VMDK behind the format seam (`DiskFormatDriver`): the monolithicSparse view, a stream-optimized
/// writer for `convert -o subformat=streamOptimized`, the reader and the check.
public struct VMDKDriver: DiskFormatDriver {
    public init() {}
    public var name: String { VMDK.formatName }
    public var subformats: [String] { ["monolithicSparse", "streamOptimized"] }
    public var signatureLength: Int { VMDK.magic.count }

    public func matches(head: [UInt8], tail: [UInt8]) -> Bool {
        // A sparse extent starts with "KDMV"; a descriptor file with its comment line.
        head.starts(with: VMDK.magic) || head.starts(with: Array(VMDK.descriptorSignature.utf8))
    }

    public func open(path: String) throws -> any BlockSource { try VMDKFile.open(path: path) }
    public func check(path: String) throws -> CheckReport { try VMDKCheck.run(path: path) }
    public func info(path: String) throws -> ImageInfo { try VMDKFile.open(path: path).info(path: path) }

    public func view(of source: any BlockSource, options: NativeFormatOptions) throws -> any NativeFormatView {
        let o = try synthesisOptions(options)
        guard o.createType == "monolithicSparse" else {
            throw NativeFormatOptionError(format: name, reason: "subformat \(o.createType) is written by convert, it has no view (compressed grains)")
        }
        return try VMDKView(source: source, options: o)
    }

    public func convert(_ source: any BlockSource, toPath path: String, options: NativeFormatOptions,
                        writer: SparseImageWriter.Options) throws -> SparseImageWriter.Stats {
        var o = try synthesisOptions(options)
        // A monolithic file's extent line names the file itself, and libvmdk opens the extent by
        // that name beside the descriptor: name the file being written unless told otherwise.
        if options.keys["extent_name"] == nil {
            let base = path.split(separator: "/", omittingEmptySubsequences: true).last.map(String.init) ?? path
            if !base.contains("\""), !base.contains("\n"), !base.isEmpty { o.extentName = base }
        }
        if o.createType == "streamOptimized" {
            return try VMDKStreamWriter.write(source, toPath: path, options: o, sync: writer.sync)
        }
        var w = writer
        w.deferredPrefix = signatureLength
        return try SparseImageWriter.write(try VMDKView(source: source, options: o), toPath: path, options: w)
    }

    /// The common options mapped onto VMDK's own: `adapter_type`, `hwversion`, `extent_name`.
    public func synthesisOptions(_ options: NativeFormatOptions) throws -> VMDKSynthesisOptions {
        let unknown = options.unknownKeys(allowed: ["adapter_type", "hwversion", "extent_name"])
        guard unknown.isEmpty else {
            throw NativeFormatOptionError(format: name, reason: "unknown option(s) \(unknown.joined(separator: ", "))")
        }
        var o = VMDKSynthesisOptions(seed: options.seed)
        if let s = options.subformat {
            guard let m = subformats.first(where: { $0.lowercased() == s.lowercased() }) else {
                throw NativeFormatOptionError(format: name, reason: "subformat \(s) is not one of \(subformats.joined(separator: ", "))")
            }
            o.createType = m
        }
        guard options.logicalSectorSize == 512 else {
            throw NativeFormatOptionError(format: name, reason: "VMDK sectors are 512 bytes (logical_sector_size \(options.logicalSectorSize))")
        }
        if let u = options.allocationUnit { o.grainSize = u }
        if let a = options.keys["adapter_type"] {
            guard let m = VMDK.adapterTypes.first(where: { $0.lowercased() == a.lowercased() }) else {
                throw NativeFormatOptionError(format: name, reason: "adapter_type \(a) is not one of \(VMDK.adapterTypes.joined(separator: ", ")); "
                    + "the disk controller (pvscsi, nvme, sata…) lives in the VM's configuration (.vmx), not in the VMDK")
            }
            o.adapterType = m
        }
        if let hw = options.keys["hwversion"] {
            guard let n = Int(hw), n > 0, n < 1000 else { throw NativeFormatOptionError(format: name, reason: "hwversion \(hw) is not a number") }
            o.hardwareVersion = String(n)
        }
        if let e = options.keys["extent_name"] { o.extentName = e }
        try o.validate(virtualSize: 0)
        return o
    }
}
