import BlockCore

/// One metadata table entry (32 bytes) [SPEC:740-777].
public struct VHDXMetadataEntry: Sendable, Equatable {
    public var itemID: GUID
    /// From the start of the metadata region.
    public var offset: UInt32
    public var length: UInt32
    public var flags: UInt32

    public init(itemID: GUID, offset: UInt32, length: UInt32, flags: UInt32) {
        self.itemID = itemID
        self.offset = offset
        self.length = length
        self.flags = flags
    }

    public var isUser: Bool { flags & VHDX.metadataFlagIsUser != 0 }
    public var isVirtualDisk: Bool { flags & VHDX.metadataFlagIsVirtualDisk != 0 }
    public var isRequired: Bool { flags & VHDX.metadataFlagIsRequired != 0 }
}

/// The metadata table at the start of the metadata region [SPEC:702-761].
public struct VHDXMetadataTable: Sendable, Equatable {
    public static let tableSize = 0x10000
    public var entries: [VHDXMetadataEntry]

    public init(entries: [VHDXMetadataEntry]) { self.entries = entries }

    /// Parses the table (the first 64 KiB of the region) and checks every entry against the
    /// region's length [SPEC:749-761].
    public static func parse(_ bytes: [UInt8], at regionOffset: UInt64, regionLength: UInt64) throws -> VHDXMetadataTable {
        let v = ByteView(bytes, base: regionOffset, format: VHDX.formatName, structure: "metadata table")
        guard try v.slice(0, 8) == VHDX.metadataSignature else { throw v.error(at: 0, "signature is not 'metadata'") }
        let count = try v.u16(10)
        guard count <= VHDX.maxMetadataEntries else { throw v.error(at: 10, "entry count \(count) exceeds 2047") }
        var entries: [VHDXMetadataEntry] = []
        var userCount = 0
        for i in 0..<Int(count) {
            let at = 32 + i * 32
            let e = VHDXMetadataEntry(itemID: GUID(bytes: try v.slice(at, 16)), offset: try v.u32(at + 16),
                                      length: try v.u32(at + 20), flags: try v.u32(at + 24))
            let ev = ByteView(bytes, base: regionOffset, format: VHDX.formatName, structure: "metadata entry \(i)")
            if e.length == 0 {
                if e.offset != 0 { throw ev.error(at: at + 16, "offset must be 0 when length is 0") }
            } else {
                guard e.offset >= VHDX.minMetadataItemOffset else {
                    throw ev.error(at: at + 16, "item offset 0x\(String(e.offset, radix: 16)) is inside the table (< 64 KiB)")
                }
                guard e.length <= VHDX.maxMetadataItemLength else {
                    throw ev.error(at: at + 20, "item length \(e.length) exceeds 1 MiB")
                }
                guard UInt64(e.offset) + UInt64(e.length) <= regionLength else {
                    throw ev.error(at: at + 16, "item 0x\(String(e.offset, radix: 16))+\(e.length) lies outside the region (length 0x\(String(regionLength, radix: 16)))")
                }
            }
            if e.isUser { userCount += 1 }
            for (j, o) in entries.enumerated() {
                if o.itemID == e.itemID && o.isUser == e.isUser {
                    throw ev.error(at: at, "item \(e.itemID) duplicates entry \(j)")
                }
                if e.length > 0 && o.length > 0 && e.offset < o.offset + o.length && o.offset < e.offset + e.length {
                    throw ev.error(at: at + 16, "item overlaps the item of entry \(j)")
                }
            }
            entries.append(e)
        }
        guard userCount <= VHDX.maxUserMetadataEntries else { throw v.error(at: 10, "\(userCount) user items exceed 1024") }
        return VHDXMetadataTable(entries: entries)
    }

    public func serialize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.tableSize)
        out.put(VHDX.metadataSignature, at: 0)
        out.putLE16(UInt16(entries.count), at: 10)
        for (i, e) in entries.enumerated() {
            let at = 32 + i * 32
            out.put(e.itemID.bytes, at: at)
            out.putLE32(e.offset, at: at + 16)
            out.putLE32(e.length, at: at + 20)
            out.putLE32(e.flags, at: at + 24)
        }
        return out
    }
}

/// A metadata item kept as bytes: user items, and system items we do not interpret.
public struct VHDXRawMetadataItem: Sendable, Equatable {
    public var itemID: GUID
    public var flags: UInt32
    public var data: [UInt8]

    public init(itemID: GUID, flags: UInt32, data: [UInt8]) {
        self.itemID = itemID
        self.flags = flags
        self.data = data
    }
}

/// Every metadata item of a VHDX, interpreted [SPEC:780-912].
public struct VHDXMetadata: Sendable, Equatable {
    public var blockSize: UInt32
    public var leaveBlocksAllocated: Bool
    public var hasParent: Bool
    public var virtualSize: UInt64
    public var virtualDiskID: GUID
    public var logicalSectorSize: UInt32
    public var physicalSectorSize: UInt32
    public var parentLocator: VHDXParentLocator?
    /// User items (IsUser set), in table order.
    public var userItems: [VHDXRawMetadataItem]
    /// Non-user items that are not required and not known: kept, ignored [SPEC:767].
    public var otherItems: [VHDXRawMetadataItem]

    public init(blockSize: UInt32, leaveBlocksAllocated: Bool = false, hasParent: Bool = false, virtualSize: UInt64,
                virtualDiskID: GUID, logicalSectorSize: UInt32 = 512, physicalSectorSize: UInt32 = 512,
                parentLocator: VHDXParentLocator? = nil, userItems: [VHDXRawMetadataItem] = [],
                otherItems: [VHDXRawMetadataItem] = []) {
        self.blockSize = blockSize
        self.leaveBlocksAllocated = leaveBlocksAllocated
        self.hasParent = hasParent
        self.virtualSize = virtualSize
        self.virtualDiskID = virtualDiskID
        self.logicalSectorSize = logicalSectorSize
        self.physicalSectorSize = physicalSectorSize
        self.parentLocator = parentLocator
        self.userItems = userItems
        self.otherItems = otherItems
    }

    public var isDifferencing: Bool { hasParent }

    /// Parses the items the table names. `read(offset, count)` reads file bytes; every item is at
    /// most 1 MiB and inside the region (checked by the table parser).
    public static func parse(table: VHDXMetadataTable, regionOffset: UInt64,
                             read: (UInt64, Int) throws -> [UInt8]) throws -> VHDXMetadata {
        func item(_ id: GUID) -> (Int, VHDXMetadataEntry)? {
            table.entries.enumerated().first { $0.element.itemID == id && !$0.element.isUser }.map { ($0.offset, $0.element) }
        }
        func view(_ id: GUID, _ name: String, minLength: Int) throws -> ByteView {
            guard let (i, e) = item(id) else {
                throw FormatError(VHDX.formatName, "metadata table", at: regionOffset, "required item \(name) is missing")
            }
            let at = regionOffset + UInt64(e.offset)
            guard e.length >= minLength else {
                throw FormatError(VHDX.formatName, "metadata entry \(i) (\(name))", at: regionOffset + 32 + UInt64(i) * 32 + 20,
                                  "length \(e.length) is shorter than \(minLength)")
            }
            return ByteView(try read(at, Int(e.length)), base: at, format: VHDX.formatName, structure: name)
        }
        let fp = try view(VHDX.fileParametersItem, "file parameters", minLength: 8)
        let blockSize = try fp.u32(0)
        guard blockSize >= VHDX.minBlockSize, blockSize <= VHDX.maxBlockSize, blockSize & (blockSize - 1) == 0 else {
            throw fp.error(at: 0, "block size \(blockSize) is not a power of 2 from 1 MiB to 256 MiB")
        }
        let fpFlags = try fp.u32(4)
        let lss = try view(VHDX.logicalSectorSizeItem, "logical sector size", minLength: 4)
        let logical = try lss.u32(0)
        guard logical == 512 || logical == 4096 else { throw lss.error(at: 0, "logical sector size \(logical) is not 512 or 4096") }
        let pss = try view(VHDX.physicalSectorSizeItem, "physical sector size", minLength: 4)
        let physical = try pss.u32(0)
        guard physical == 512 || physical == 4096 else { throw pss.error(at: 0, "physical sector size \(physical) is not 512 or 4096") }
        let vs = try view(VHDX.virtualDiskSizeItem, "virtual disk size", minLength: 8)
        let size = try vs.u64(0)
        guard size % UInt64(logical) == 0 else { throw vs.error(at: 0, "virtual size \(size) is not a multiple of the logical sector size \(logical)") }
        guard size <= VHDX.maxVirtualSize else { throw vs.error(at: 0, "virtual size \(size) exceeds 64 TiB") }
        let vid = try view(VHDX.virtualDiskIDItem, "virtual disk ID", minLength: 16)
        let hasParent = fpFlags & VHDX.hasParentFlag != 0
        var locator: VHDXParentLocator?
        if hasParent {
            let pl = try view(VHDX.parentLocatorItem, "parent locator", minLength: 20)
            locator = try VHDXParentLocator.parse(pl.bytes, at: pl.base)
        }
        let known: Set<GUID> = [VHDX.fileParametersItem, VHDX.virtualDiskSizeItem, VHDX.virtualDiskIDItem,
                                VHDX.logicalSectorSizeItem, VHDX.physicalSectorSizeItem, VHDX.parentLocatorItem]
        var users: [VHDXRawMetadataItem] = []
        var others: [VHDXRawMetadataItem] = []
        for (i, e) in table.entries.enumerated() {
            if e.isUser {
                users.append(VHDXRawMetadataItem(itemID: e.itemID, flags: e.flags,
                                                 data: e.length == 0 ? [] : try read(regionOffset + UInt64(e.offset), Int(e.length))))
            } else if !known.contains(e.itemID) {
                // [SPEC:775]: an implementation must fail to open a file with an unknown required item.
                if e.isRequired {
                    throw FormatError(VHDX.formatName, "metadata entry \(i)", at: regionOffset + 32 + UInt64(i) * 32,
                                      "unknown required item \(e.itemID)")
                }
                others.append(VHDXRawMetadataItem(itemID: e.itemID, flags: e.flags,
                                                  data: e.length == 0 ? [] : try read(regionOffset + UInt64(e.offset), Int(e.length))))
            }
        }
        return VHDXMetadata(blockSize: blockSize, leaveBlocksAllocated: fpFlags & VHDX.leaveBlocksAllocatedFlag != 0,
                            hasParent: hasParent, virtualSize: size, virtualDiskID: GUID(bytes: try vid.slice(0, 16)),
                            logicalSectorSize: logical, physicalSectorSize: physical, parentLocator: locator,
                            userItems: users, otherItems: others)
    }

    /// The whole metadata region (`regionLength` bytes): table, then items packed from 64 KiB in the
    /// QEMU/Disk2VHD order FP, VS, VID, LSS, PSS (vhdx-notes §4), then the parent locator, other
    /// items and user items, through the one packer (`VHDXMetadataRegion.pack`). Values are not
    /// judged here (tests write broken ones on purpose); only items that do not fit throw.
    public func serialize(regionLength: Int = Int(VHDX.mib)) throws(VHDXSynthesisError) -> [UInt8] {
        func le32(_ v: UInt32) -> [UInt8] { var b = [UInt8](repeating: 0, count: 4); b.putLE32(v, at: 0); return b }
        func le64(_ v: UInt64) -> [UInt8] { var b = [UInt8](repeating: 0, count: 8); b.putLE64(v, at: 0); return b }
        let required = VHDX.metadataFlagIsRequired
        let vd = VHDX.metadataFlagIsRequired | VHDX.metadataFlagIsVirtualDisk
        let fpFlags = (leaveBlocksAllocated ? VHDX.leaveBlocksAllocatedFlag : 0) | (hasParent ? VHDX.hasParentFlag : 0)
        var items = [
            VHDXMetadataRegion.Item(id: VHDX.fileParametersItem, flags: required, name: "file parameters", payload: le32(blockSize) + le32(fpFlags)),
            VHDXMetadataRegion.Item(id: VHDX.virtualDiskSizeItem, flags: vd, name: "virtual disk size", payload: le64(virtualSize)),
            VHDXMetadataRegion.Item(id: VHDX.virtualDiskIDItem, flags: vd, name: "virtual disk ID", payload: virtualDiskID.bytes),
            VHDXMetadataRegion.Item(id: VHDX.logicalSectorSizeItem, flags: vd, name: "logical sector size", payload: le32(logicalSectorSize)),
            VHDXMetadataRegion.Item(id: VHDX.physicalSectorSizeItem, flags: vd, name: "physical sector size", payload: le32(physicalSectorSize)),
        ]
        if let loc = parentLocator {
            items.append(.init(id: VHDX.parentLocatorItem, flags: required, name: "parent locator", payload: loc.serialize()))
        }
        items += otherItems.map { .init(id: $0.itemID, flags: $0.flags, name: "other", payload: $0.data) }
        items += userItems.map { .init(id: $0.itemID, flags: $0.flags | VHDX.metadataFlagIsUser, name: "user", payload: $0.data) }
        let packed = try VHDXMetadataRegion.pack(items, regionLength: regionLength).bytes
        return packed + [UInt8](repeating: 0, count: regionLength - packed.count)
    }
}

/// How items are placed in a metadata region: the one packer behind every metadata region
/// BootLab writes (the skeleton of `create` and of the synthesizer, and `VHDXMetadata.serialize`).
public enum VHDXMetadataRegion {
    /// One item; `offset` and `length` are filled in by `pack`.
    public struct Item: Sendable, Hashable {
        public var id: GUID
        public var flags: UInt32
        /// For layout dumps only ("file parameters", "user", …); not stored.
        public var name: String
        public var payload: [UInt8]
        public var offset: UInt32 = 0
        public var length: UInt32 { UInt32(payload.count) }

        public init(id: GUID, flags: UInt32, name: String, payload: [UInt8]) {
            self.id = id
            self.flags = flags
            self.name = name
            self.payload = payload
        }
    }

    /// Places `items` in table order and returns the region's meaningful prefix (the table and
    /// the items, rounded up to 4 KiB; the rest of the region is zero) and the placed items.
    /// The first five (the system items) are packed back to back from 64 KiB, as QEMU and
    /// Disk2VHD do (vhdx-notes §4); later ones start 8-byte aligned.
    public static func pack(_ items: [Item], regionLength: Int) throws(VHDXSynthesisError) -> (bytes: [UInt8], placed: [Item]) {
        var placed: [Item] = []
        // MS-VHDX 2.6.1.2: an item's Offset "MUST be at least 64 KB" (the table's own 64 KiB),
        // and 0 when its Length is 0.
        var next = UInt64(VHDX.minMetadataItemOffset)
        for (i, item) in items.enumerated() {
            var p = item
            if !item.payload.isEmpty {
                if i >= 5 { next = VHDX.roundUp(next, to: 8) }
                p.offset = UInt32(next)
                next += UInt64(item.payload.count)
                // MS-VHDX 2.6.1.2: items must lie inside the region.
                guard next <= UInt64(regionLength) else {
                    throw .userMetadata("items need \(next) bytes; the metadata region holds \(regionLength)")
                }
            }
            placed.append(p)
        }
        var bytes = [UInt8](repeating: 0, count: Int(VHDX.roundUp(next, to: 4096)))
        let table = VHDXMetadataTable(entries: placed.map {
            VHDXMetadataEntry(itemID: $0.id, offset: $0.offset, length: $0.length, flags: $0.flags)
        }).serialize()
        bytes.put(Array(table.prefix(32 + 32 * placed.count)), at: 0)
        for p in placed where p.length > 0 { bytes.put(p.payload, at: Int(p.offset)) }
        return (bytes, placed)
    }
}

/// The parent locator item: a type GUID and UTF-16LE key/value pairs [SPEC:841-912].
public struct VHDXParentLocator: Sendable, Equatable {
    public var locatorType: GUID
    /// Pairs in stored order; keys are case-sensitive and unique.
    public var entries: [(key: String, value: String)]

    public init(locatorType: GUID = VHDX.vhdxParentLocatorType, entries: [(key: String, value: String)]) {
        self.locatorType = locatorType
        self.entries = entries
    }

    public subscript(key: String) -> String? { entries.first { $0.key == key }?.value }

    public static func == (a: VHDXParentLocator, b: VHDXParentLocator) -> Bool {
        a.locatorType == b.locatorType && a.entries.count == b.entries.count
            && zip(a.entries, b.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }

    public static func parse(_ bytes: [UInt8], at offset: UInt64) throws -> VHDXParentLocator {
        let v = ByteView(bytes, base: offset, format: VHDX.formatName, structure: "parent locator")
        let type = GUID(bytes: try v.slice(0, 16))
        guard type == VHDX.vhdxParentLocatorType else { throw v.error(at: 0, "locator type \(type) is not the VHDX locator type") }
        let count = Int(try v.u16(18))
        guard 20 + count * 12 <= bytes.count else { throw v.error(at: 18, "\(count) key/value entries do not fit in \(bytes.count) bytes") }
        var entries: [(key: String, value: String)] = []
        func string(_ off: UInt32, _ len: UInt16, _ field: Int, _ what: String) throws -> String {
            guard off > 0, len > 0, len % 2 == 0, Int(off) + Int(len) <= bytes.count else {
                throw v.error(at: field, "\(what) at +\(off) length \(len) is empty, odd or outside the item")
            }
            let units = stride(from: Int(off), to: Int(off) + Int(len), by: 2).map { bytes.le16($0) }
            return String(decoding: units, as: UTF16.self)
        }
        for i in 0..<count {
            let at = 20 + i * 12
            let key = try string(try v.u32(at), try v.u16(at + 8), at, "key \(i)")
            let value = try string(try v.u32(at + 4), try v.u16(at + 10), at + 4, "value \(i)")
            if entries.contains(where: { $0.key == key }) { throw v.error(at: at, "key '\(key)' appears twice") }
            entries.append((key, value))
        }
        return VHDXParentLocator(locatorType: type, entries: entries)
    }

    /// Header, entries, then each key and value packed in entry order (as Hyper-V lays it out).
    public func serialize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 20 + entries.count * 12)
        out.put(locatorType.bytes, at: 0)
        out.putLE16(UInt16(entries.count), at: 18)
        for (i, e) in entries.enumerated() {
            let k = e.key.utf16.flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] }
            let val = e.value.utf16.flatMap { [UInt8($0 & 0xff), UInt8($0 >> 8)] }
            out.putLE32(UInt32(out.count), at: 20 + i * 12)
            out.append(contentsOf: k)
            out.putLE32(UInt32(out.count), at: 20 + i * 12 + 4)
            out.append(contentsOf: val)
            out.putLE16(UInt16(k.count), at: 20 + i * 12 + 8)
            out.putLE16(UInt16(val.count), at: 20 + i * 12 + 10)
        }
        return out
    }
}
