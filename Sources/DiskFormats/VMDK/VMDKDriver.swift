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
        if let e = options.keys["extent_name"] {
            o.extentName = e
        } else if let n = options.fileName, !n.isEmpty, !n.contains("\""), !n.contains("\n"), !n.contains("/") {
            o.extentName = n
        }
        try o.validate(virtualSize: 0)
        return o
    }
}

// MARK: Plugin files and structure sites

extension VMDKDriver {
    /// The descriptor key holding the plugin pointer (base64 of the blob).
    public static let pointerKey = "ddb.bootlab.pointer"
    /// The descriptor area of a plugin file: 1 MiB, fixed so that the layout never depends on the
    /// pointer (base64 of the largest blob, `PluginPointerPlacement.maxBlobLength`, is 87 384
    /// characters). Why so large: QEMU's vmdk driver reads the embedded descriptor as up to
    /// 1 MiB − 1 bytes from its offset whatever the header says, so with a smaller area opening
    /// the plugin (`qemu-img info`) would read payload and open the backup — deferred open would
    /// not hold. The area is zeros past the text, a hole in the plugin file.
    public static let pluginDescriptorSectors: UInt64 = 2048

    public func pluginView(of source: any BlockSource, options: NativeFormatOptions, pointer: [UInt8]) throws -> any NativeFormatView {
        guard pointer.count <= PluginPointerPlacement.maxBlobLength else {
            throw NativeFormatOptionError(format: name, reason: "plugin pointer of \(pointer.count) bytes exceeds \(PluginPointerPlacement.maxBlobLength)")
        }
        var o = try synthesisOptions(options)
        guard o.createType == "monolithicSparse" else {
            throw NativeFormatOptionError(format: name, reason: "plugin files are monolithicSparse (streamOptimized has no view)")
        }
        o.descriptorSectors = Self.pluginDescriptorSectors
        return try VMDKView(source: source, options: o, descriptorExtras: ["\(Self.pointerKey) = \"\(VMDKBase64.encode(pointer))\""])
    }

    /// The blob under `ddb.bootlab.pointer` in the embedded descriptor; reads only the header and
    /// the descriptor (a plugin file's payload is a hole).
    public func readPluginPointer(path: String) throws -> [UInt8]? {
        let f = try RawFile(path: path)
        guard f.size >= 512 else { throw FormatError(VMDK.errorName, "sparse header", at: 0, "file of \(f.size) bytes has no header") }
        let h = try VMDKSparseHeader.parse(try f.read(at: 0, count: 512), at: 0)
        guard h.descriptorOffset != 0, h.descriptorSize != 0 else { return nil }
        let (start, o1) = h.descriptorOffset.multipliedReportingOverflow(by: 512)
        let (len, o2) = h.descriptorSize.multipliedReportingOverflow(by: 512)
        guard !o1, !o2, len <= VMDK.maxDescriptorBytes, start < f.size, len <= f.size - start else {
            throw FormatError(VMDK.errorName, "sparse header", at: 28, "descriptor is not inside the file")
        }
        let d = try VMDKDescriptor.parse(try f.read(at: start, count: Int(len)), at: start)
        guard let text = d.ddbValue(Self.pointerKey) else { return nil }
        guard let blob = VMDKBase64.decode(text) else {
            throw FormatError(VMDK.errorName, "descriptor", at: start, "\(Self.pointerKey) is not base64")
        }
        return blob
    }

    /// A byte inside each structure of a sparse extent: the header's grainSize, the descriptor's
    /// extent size, the first entries of the grain directory and its redundant copy, the first
    /// allocated grain table entry (its middle byte: the grain moves) — or, for a stream, the
    /// footer's gdOffset and the first grain marker's LBA.
    public func structureSites(path: String) throws -> [String: UInt64] {
        let f = try VMDKFile.open(path: path)
        guard let x = f.sparse else { return [:] }
        let h = x.header
        var sites: [String: UInt64] = ["header": 20]
        if let d = x.descriptor, x.descriptorRange.count > 0 {
            let text = try x.file.read(at: x.descriptorRange.lowerBound, count: Int(x.descriptorRange.count))
            let needle = Array("\n\(d.extents.first?.access ?? "RW") ".utf8)
            if let i = (0..<max(0, text.count - needle.count)).first(where: { Array(text[$0..<$0 + needle.count]) == needle }) {
                sites["descriptor"] = x.descriptorRange.lowerBound + UInt64(i + needle.count)
            }
        }
        let gdStart = h.gdOffset * 512
        sites["grain directory"] = gdStart
        if h.hasRedundantGrainTable && h.rgdOffset != 0 && !h.hasMarkers { sites["redundant grain directory"] = h.rgdOffset * 512 }
        outer: for (i, s) in x.directory.enumerated() where s != 0 {
            guard let t = try x.table(i) else { continue }
            for (k, e) in t.enumerated() where e > 1 {
                sites["grain table entry"] = UInt64(s) * 512 + UInt64(k) * 4 + 1
                if h.hasMarkers { sites["grain marker"] = UInt64(e) * 512 }
                break outer
            }
        }
        if h.hasMarkers && f.fileSize >= 1024 { sites["footer"] = f.fileSize - 1024 + 56 }
        return sites
    }
}

/// RFC 4648 base64 (standard alphabet, padded) for the pointer blob in the descriptor.
enum VMDKBase64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let n = min(3, bytes.count - i)
            let v = UInt32(bytes[i]) << 16 | (n > 1 ? UInt32(bytes[i + 1]) << 8 : 0) | (n > 2 ? UInt32(bytes[i + 2]) : 0)
            for k in 0..<4 { out.append(k <= n ? alphabet[Int((v >> (18 - 6 * UInt32(k))) & 63)] : UInt8(ascii: "=")) }
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 4 == 0 else { return nil }
        var map = [Int](repeating: -1, count: 256)
        for (i, c) in alphabet.enumerated() { map[Int(c)] = i }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 4 * 3)
        var i = 0
        while i < chars.count {
            var v: UInt32 = 0, pad = 0
            for k in 0..<4 {
                let c = chars[i + k]
                if c == UInt8(ascii: "=") && i + 4 == chars.count && k >= 2 { pad += 1; v <<= 6; continue }
                guard pad == 0, map[Int(c)] >= 0 else { return nil }
                v = v << 6 | UInt32(map[Int(c)])
            }
            out.append(UInt8(v >> 16))
            if pad < 2 { out.append(UInt8((v >> 8) & 0xff)) }
            if pad < 1 { out.append(UInt8(v & 0xff)) }
            i += 4
        }
        return out
    }
}
