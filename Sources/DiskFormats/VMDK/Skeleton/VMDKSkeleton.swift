import BlockCore

/// Why a VMDK could not be synthesized with the given parameters.
public struct VMDKSynthesisError: Error, CustomStringConvertible, Equatable, Sendable {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "vmdk: \(reason)" }
}

/// What a synthesized VMDK looks like, besides its content.
public struct VMDKSynthesisOptions: Sendable, Equatable {
    /// `createType` of the embedded descriptor: "monolithicSparse" (the view) or
    /// "streamOptimized" (the stream writer).
    public var createType = "monolithicSparse"
    /// Grain size in bytes: a power of two, 4 KiB … 1 MiB (VMware and qemu: 64 KiB).
    public var grainSize: UInt64 = VMDK.defaultGrainSectors * VMDK.sector
    /// `ddb.adapterType`: ide, buslogic, lsilogic or legacyESX.
    public var adapterType = "ide"
    /// `ddb.virtualHWVersion`.
    public var hardwareVersion = "4"
    /// The file name the extent line names. A monolithic file's extent is the file itself, so this
    /// is the name the file will have (libvmdk resolves it beside the file; qemu ignores it).
    public var extentName = "disk.vmdk"
    /// Sectors reserved for the embedded descriptor (20 as VMware/qemu; a plugin file reserves
    /// room for its pointer so that the layout does not depend on it).
    public var descriptorSectors: UInt64 = VMDK.defaultDescriptorSectors
    /// Extra descriptor lines, appended to the disk database (`ddb.key = "value"`).
    public var descriptorExtras: [String] = []
    /// 16 bytes from which the CID and ddb.uuid derive.
    public var seed: [UInt8] = Array(repeating: 0, count: 16)

    public init(createType: String = "monolithicSparse", grainSize: UInt64 = 65536, adapterType: String = "ide",
                hardwareVersion: String = "4", extentName: String = "disk.vmdk",
                descriptorSectors: UInt64 = VMDK.defaultDescriptorSectors, descriptorExtras: [String] = [],
                seed: [UInt8] = Array(repeating: 0, count: 16)) {
        self.createType = createType
        self.grainSize = grainSize
        self.adapterType = adapterType
        self.hardwareVersion = hardwareVersion
        self.extentName = extentName
        self.descriptorSectors = descriptorSectors
        self.descriptorExtras = descriptorExtras
        self.seed = seed
    }

    /// The rules, checked once for the view and the stream writer.
    public func validate(virtualSize: UInt64) throws {
        guard virtualSize % VMDK.sector == 0 else {
            throw VMDKSynthesisError("virtual size \(virtualSize) is not a multiple of 512 (VMDK capacities are in sectors)")
        }
        guard grainSize >= 4096, grainSize <= 1 << 20, grainSize & (grainSize - 1) == 0 else {
            throw VMDKSynthesisError("grain size \(grainSize) is not a power of two from 4 KiB to 1 MiB")
        }
        guard VMDK.adapterTypes.contains(adapterType) else {
            throw VMDKSynthesisError("adapter_type \(adapterType) is not one of \(VMDK.adapterTypes.joined(separator: ", ")); "
                + "a VMDK only records the disk's geometry family — a controller such as pvscsi is chosen in the VM's configuration (.vmx), not in the disk")
        }
        guard seed.count == 16 else { throw VMDKSynthesisError("seed must have 16 bytes, not \(seed.count)") }
        guard (1...2048).contains(descriptorSectors) else { throw VMDKSynthesisError("descriptor area of \(descriptorSectors) sectors (1…2048)") }
        guard !extentName.contains("\""), !extentName.contains("\n"), !extentName.isEmpty else {
            throw VMDKSynthesisError("extent name \"\(extentName)\" is empty or holds a quote or newline")
        }
        for x in descriptorExtras {
            guard !x.contains("\n"), !x.contains("\r"), !x.contains("\0"), x.hasPrefix("ddb.") || x.hasPrefix("#") else {
                throw VMDKSynthesisError("descriptor extra line \"\(x.prefix(40))\" must be one ddb. key (or a comment) without newlines")
            }
        }
    }

    /// Heads and sectors per track of the descriptor's geometry (qemu-img's rule: 16 heads for
    /// IDE, 255 for SCSI adapters; always 63 sectors; cylinders = size / (heads·63·512), floored).
    public func geometry(virtualSize: UInt64) -> (cylinders: UInt64, heads: UInt64, sectors: UInt64) {
        let heads: UInt64 = adapterType == "ide" ? 16 : 255
        return (virtualSize / (heads * 63 * VMDK.sector), heads, 63)
    }
}

/// Where every structure of a hosted sparse extent goes (the placement qemu-img and VMware use),
/// decided once for the view and the stream writer. Offsets in sectors unless named in bytes.
///
/// Sector 0 header, 1 … descriptor, then the redundant grain directory, the redundant grain
/// tables (one per GD entry, 4 sectors each), the grain directory, the grain tables, and the
/// grains from `overhead` (rounded up to a grain).
public struct VMDKSkeleton: Sendable {
    public let options: VMDKSynthesisOptions
    public let virtualSize: UInt64
    public let capacity: UInt64
    public let grainSectors: UInt64
    public let grainCount: UInt64
    public let gtCount: UInt64
    public let gdSectors: UInt64
    public let gtSectors: UInt64
    public let descriptorOffset: UInt64 = 1
    public let descriptorSectors: UInt64
    public let rgdOffset: UInt64
    public let gdOffset: UInt64
    /// Sectors before the first grain.
    public let overhead: UInt64
    public let cid: UInt32
    public let descriptor: VMDKDescriptor
    /// The rendered descriptor, padded with zeros to the descriptor area.
    public let descriptorBytes: [UInt8]

    public init(virtualSize: UInt64, options: VMDKSynthesisOptions) throws {
        try options.validate(virtualSize: virtualSize)
        self.options = options
        self.virtualSize = virtualSize
        capacity = virtualSize / VMDK.sector
        grainSectors = options.grainSize / VMDK.sector
        grainCount = (capacity + grainSectors - 1) / grainSectors
        gtCount = (grainCount + VMDK.gtesPerGT - 1) / VMDK.gtesPerGT
        gdSectors = (gtCount * 4 + VMDK.sector - 1) / VMDK.sector
        gtSectors = VMDK.gtesPerGT * 4 / VMDK.sector
        descriptorSectors = options.descriptorSectors
        rgdOffset = descriptorOffset + descriptorSectors
        gdOffset = rgdOffset + gdSectors + gtCount * gtSectors
        let end = gdOffset + gdSectors + gtCount * gtSectors
        overhead = (end + grainSectors - 1) / grainSectors * grainSectors
        // Grain table entries are 32-bit sector numbers: every grain must start below 2^32 sectors.
        guard overhead + grainCount * grainSectors <= UInt64(UInt32.max) else {
            throw VMDKSynthesisError("a \(virtualSize)-byte disk does not fit a sparse extent (grain offsets are 32-bit sector numbers: at most about 2 TiB)")
        }
        let digest = SHA256.hash(options.seed + Array("vmdk CID".utf8))
        var c = UInt32(digest[0]) << 24 | UInt32(digest[1]) << 16 | UInt32(digest[2]) << 8 | UInt32(digest[3])
        if c == 0xFFFF_FFFF || c == 0xFFFF_FFFE { c = 0x0000_0001 }  // VMware's "no parent"/"invalid" values
        cid = c
        let g = options.geometry(virtualSize: virtualSize)
        let uuid = GUID.derived(seed: options.seed, label: "vmdk uuid").bytes
        let uuidText = uuid.map { String($0, radix: 16).leftPadded(2) }.joined(separator: " ")
        var ddb: [(key: String, value: String)] = [
            ("ddb.adapterType", options.adapterType),
            ("ddb.geometry.cylinders", String(g.cylinders)),
            ("ddb.geometry.heads", String(g.heads)),
            ("ddb.geometry.sectors", String(g.sectors)),
            ("ddb.uuid", uuidText),
            ("ddb.virtualHWVersion", options.hardwareVersion),
        ]
        for x in options.descriptorExtras where !x.hasPrefix("#") {
            let parts = x.split(separator: "=", maxSplits: 1).map { String($0).trimmingCharacters() }
            var v = parts.count > 1 ? parts[1] : ""
            if v.count >= 2, v.hasPrefix("\""), v.hasSuffix("\"") { v = String(v.dropFirst().dropLast()) }
            ddb.append((parts[0], v))
        }
        descriptor = VMDKDescriptor(
            header: [("version", "1"), ("encoding", "UTF-8"), ("CID", String(c, radix: 16).leftPadded(8)),
                     ("parentCID", "ffffffff"), ("createType", options.createType)],
            extents: [.init(sectors: capacity, type: "SPARSE", fileName: options.extentName)],
            ddb: ddb)
        var text = Array(descriptor.render().utf8)
        guard UInt64(text.count) <= descriptorSectors * VMDK.sector else {
            throw VMDKSynthesisError("descriptor of \(text.count) bytes does not fit its \(descriptorSectors)-sector area")
        }
        text += [UInt8](repeating: 0, count: Int(descriptorSectors * VMDK.sector) - text.count)
        descriptorBytes = text
    }

    /// File sector of grain table `i`'s redundant and primary copies.
    public func rgtSector(_ i: UInt64) -> UInt64 { rgdOffset + gdSectors + i * gtSectors }
    public func gtSector(_ i: UInt64) -> UInt64 { gdOffset + gdSectors + i * gtSectors }

    /// The header of the monolithicSparse file (flags: newline test, redundant grain table).
    public var header: VMDKSparseHeader {
        var h = VMDKSparseHeader()
        h.capacity = capacity
        h.grainSize = grainSectors
        h.descriptorOffset = descriptorOffset
        h.descriptorSize = descriptorSectors
        h.rgdOffset = rgdOffset
        h.gdOffset = gdOffset
        h.overhead = overhead
        return h
    }

    /// The grain directory (`redundant`: the RGD) as bytes, `gdSectors` long.
    public func directoryBytes(redundant: Bool) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: Int(gdSectors * VMDK.sector))
        for i in 0..<gtCount { b.putLE32(UInt32(redundant ? rgtSector(i) : gtSector(i)), at: Int(i) * 4) }
        return b
    }
}

extension String {  // fileprivate: other formats of the module may have helpers of the same name
    fileprivate func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
    fileprivate func trimmingCharacters() -> String {
        let s = drop { $0 == " " || $0 == "\t" }
        return String(s.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
