import BlockCore

/// VHD behind the format seam (`DiskFormatDriver`): dynamic (default, the exposed form) and
/// fixed. Registered after every format recognised by its head, because a fixed VHD is known
/// only by the footer in its last 512 bytes.
public struct VHDDriver: DiskFormatDriver {
    public init() {}
    public var name: String { VHD.formatName }
    public var subformats: [String] { VHDSubformat.allCases.map(\.rawValue) }
    /// The footer copy at 0 of a dynamic disk. A fixed disk's footer is last anyway: its data
    /// is written first, the footer with it in the final chunk.
    public var signatureLength: Int { VHD.cookie.count }

    public func matches(head: [UInt8], tail: [UInt8]) -> Bool {
        // Dynamic/differencing: the footer copy at 0. Fixed: the footer in the last 512 bytes,
        // with a valid checksum (raw data ending in "conectix" by chance is not enough).
        if head.starts(with: VHD.cookie) { return true }
        guard tail.count == VHD.footerSize, tail.starts(with: VHD.cookie),
              let f = try? VHDFooter.parse(tail, at: 0) else { return false }
        return f.checksumIsValid
    }

    public func open(path: String) throws -> any BlockSource { try VHDFile.open(path: path) }
    public func check(path: String) throws -> CheckReport { try VHDCheck.run(path: path) }
    public func info(path: String) throws -> ImageInfo { try VHDFile.open(path: path).info(path: path) }

    public func view(of source: any BlockSource, options: NativeFormatOptions) throws -> any NativeFormatView {
        try VHDView(source: source, options: synthesisOptions(options))
    }

    /// The dynamic view with `pointer` in its pointer area (a fixed VHD has no room: refused).
    public func pluginView(of source: any BlockSource, options: NativeFormatOptions, pointer: [UInt8]) throws -> any NativeFormatView {
        var o = try synthesisOptions(options)
        o.pointer = pointer
        return try VHDView(source: source, options: o)
    }

    /// The blob in a dynamic VHD laid out by BootLab (header at 0x200, BAT at or past the area's
    /// end), nil for any other VHD or an empty area. Reads footer, header and area only.
    public func readPluginPointer(path: String) throws -> [UInt8]? {
        let f = try VHDFile.open(path: path)
        if f.dynamicHeader == nil {
            // Fixed: the tag in the footer names the sidecar's digest (`VHDSidecarTag`).
            guard let digest = VHDSidecarTag.digest(in: f.footer.reserved) else { return nil }
            let side = path + VHDSidecarTag.suffix
            let file: RawFile
            do { file = try RawFile(path: side) } catch {
                throw FormatError(name, "sidecar pointer", at: 0, "the footer names a sidecar pointer, but \(side) cannot be opened (\(error))")
            }
            guard file.size <= UInt64(PluginPointerPlacement.maxBlobLength) else {
                throw FormatError(name, "sidecar pointer", at: 0, "\(side) has \(file.size) bytes, more than \(PluginPointerPlacement.maxBlobLength)")
            }
            let blob = try file.read(at: 0, count: Int(file.size))
            guard SHA256.hash(blob) == digest else {
                throw FormatError(name, "sidecar pointer", at: 0, "\(side) is not the pointer the footer's tag names (SHA-256 differs)")
            }
            return blob
        }
        guard let h = f.dynamicHeader, f.footer.dataOffset == VHDLayout.dynamicHeaderOffset,
              h.tableOffset >= VHDLayout.pointerAreaOffset + UInt64(VHDLayout.pointerAreaLength) else { return nil }
        let area = try RawFile(path: path).read(at: VHDLayout.pointerAreaOffset, count: VHDLayout.pointerAreaLength)
        return try PointerAreaFrame.parse(area, at: VHDLayout.pointerAreaOffset, format: name)
    }

    /// A byte inside each structure: the current size of the footer (and of its copy), the
    /// dynamic header's table offset, the first allocated BAT entry. Every footer/header byte is
    /// covered by its checksum. (No sector bitmap site: QEMU ignores bitmaps, and reading every
    /// one would make `check` read 512 bytes per block.)
    public func structureSites(path: String) throws -> [String: UInt64] {
        let f = try VHDFile.open(path: path)
        var sites: [String: UInt64] = ["footer": f.fileSize - UInt64(VHD.footerSize) + 55]
        guard let h = f.dynamicHeader else { return sites }
        sites["footer copy"] = 55
        sites["dynamic disk header"] = f.footer.dataOffset + 23
        if let i = f.bat.firstIndex(where: { $0 != VHD.unallocated }) {
            sites["BAT entry"] = h.tableOffset + UInt64(i) * 4 + 1
        }
        return sites
    }

    /// The common options mapped onto VHD's: `subformat=dynamic|fixed`, `block_size` (dynamic).
    public func synthesisOptions(_ options: NativeFormatOptions) throws -> VHDSynthesisOptions {
        let unknown = options.unknownKeys(allowed: [])
        guard unknown.isEmpty else {
            throw NativeFormatOptionError(format: name, reason: "unknown option(s) \(unknown.joined(separator: ", "))")
        }
        var o = VHDSynthesisOptions(seed: options.seed)
        if let s = options.subformat {
            guard let sf = VHDSubformat(rawValue: s) else {
                throw NativeFormatOptionError(format: name, reason: "subformat \(s) is not one of \(subformats.joined(separator: ", "))")
            }
            o.subformat = sf
        }
        guard options.logicalSectorSize == 512 else {
            throw NativeFormatOptionError(format: name, reason: "VHD has 512-byte sectors only, not \(options.logicalSectorSize)")
        }
        // A fixed VHD's unit is the sector (what its view reports and a plugin pointer records).
        if let u = options.allocationUnit, !(o.subformat == .fixed && u == VHD.sector) {
            guard o.subformat == .dynamic else {
                throw NativeFormatOptionError(format: name, reason: "a fixed VHD has no block size")
            }
            guard let b = UInt32(exactly: u) else { throw VHDSynthesisError.invalidBlockSize(UInt32.max) }
            o.blockSize = b
        }
        return o
    }
}
