import BlockCore

/// The seam every native disk format plugs into: the bytes of a format's file computed on demand
/// from any `BlockSource` (the virtual disk), deterministically, without materializing.
///
/// A format lives in one folder beside `VHDX/` (`Structures/` for its on-disk records with
/// `serialize`/`parse`, `Skeleton/` for placing them, `Synthesizer/` for the view, `Reader/`,
/// `Check/`, `Writer/`), and its view conforms here. Everything above DiskFormats — conversion
/// (the view copied to disk), plugin files (the skeleton plus a pointer), the front-ends (the view
/// served), the replacement file (the view filled in) — needs only this protocol.
///
/// Contract (what makes plugin files and replacement files possible):
/// - File bytes `[0, payloadStart)` are the format's structures: the **skeleton**. They depend only
///   on the virtual disk's size and extent map, never on its data, so a plugin file can store them
///   and answer every metadata read without opening the backup (deferred open).
/// - From `payloadStart` on, each allocated payload unit (VHDX block, VMDK grain, qcow2 cluster,
///   VDI block) carries one virtual range unchanged (`fileOffset(ofVirtual:)`); zero and absent
///   units get no payload.
/// - Same source extents and options → same bytes (no clock, no random identifiers).
public protocol NativeFormatView: BlockSource {
    /// The format as named by `convert -O`, targets' `native_format` and `info` ("vhdx").
    static var formatName: String { get }
    /// Where a plugin pointer (docs/formats/plugin-file.md) is stored in this format.
    static var pointerPlacement: PluginPointerPlacement { get }
    /// The virtual disk the file presents.
    var source: any BlockSource { get }
    var virtualSize: UInt64 { get }
    /// The size of the payload unit (VHDX block size, VMDK grain, qcow2 cluster).
    var allocationUnit: UInt64 { get }
    /// The first byte after the skeleton.
    var payloadStart: UInt64 { get }
    /// Bytes `[0, payloadStart)`.
    func skeleton() throws -> [UInt8]
    /// The file offset holding virtual byte `offset`, or nil when its unit has no payload.
    func fileOffset(ofVirtual offset: UInt64) -> UInt64?
    /// A readable, deterministic description of the structures for golden files (no paths, no
    /// times, nothing not derived from the inputs).
    func layoutDump() -> String
    /// Where structures at the end of the file begin (a VHD footer), `size` when there are none.
    /// Like the skeleton, bytes `[trailerStart, size)` depend only on the virtual size and the
    /// extent map, so a plugin file stores them too.
    var trailerStart: UInt64 { get }
    /// Bytes `[trailerStart, size)`.
    func trailer() throws -> [UInt8]
    /// Payload units that hold data, for reports.
    func allocatedUnitCount() throws -> UInt64
    /// A pointer the format cannot hold inside the file (a fixed VHD), which the plugin writer
    /// stores beside it as `<plugin>.pointer`; nil when the pointer is inside.
    var sidecarPointer: [UInt8]? { get }
}

extension NativeFormatView {
    public var sidecarPointer: [UInt8]? { nil }
    public var trailerStart: UInt64 { size }
    public func trailer() throws -> [UInt8] { [] }

    /// Payload units that hold data: the units of the virtual disk its `.data` extents touch
    /// (units whose data is all zeros get no payload, but may be reported as data by a source
    /// that cannot tell; a format that knows better overrides this).
    public func allocatedUnitCount() throws -> UInt64 {
        guard allocationUnit > 0 else { return 0 }
        var count: UInt64 = 0, last: UInt64? = nil
        for e in try source.allExtents() where e.kind == .data && e.length > 0 {
            let first = e.offset / allocationUnit, end = (e.offset + e.length - 1) / allocationUnit
            let start = last.map { max($0 + 1, first) } ?? first
            if end >= start { count += end - start + 1 }
            last = max(last ?? 0, end)
        }
        return count
    }
}

/// Where a format has room for the plugin pointer. VHDX has the only case today; the formats to
/// come choose theirs (a VMDK descriptor `ddb.` key, a qcow2 header extension, a VHD parent
/// locator or a list of plugin files kept outside) and add it here.
public enum PluginPointerPlacement: Sendable, Equatable {
    /// A user metadata item of the metadata region (MS-VHDX §3.5.2: `IsUser` items are preserved
    /// and ignored by readers that do not know their GUID).
    case vhdxUserMetadataItem
    /// A `ddb.` key of a VMDK's embedded descriptor, inside its fixed-size descriptor area
    /// (unknown `ddb.` keys are kept and ignored by VMware, qemu and libvmdk). docs/formats/vmdk.md.
    case vmdkDescriptorKey
    /// A qcow2 header extension of BootLab's own type naming a fixed-size area of clusters
    /// without refcounts (docs/formats/qcow2.md); QEMU keeps unknown extensions and otherwise
    /// ignores them.
    case qcow2HeaderExtension

    /// A dynamic VHD's reserved pointer area between the dynamic disk header and the BAT
    /// (docs/formats/vhd.md): referenced by no structure, so every VHD reader skips it.
    case vhdPointerArea
    /// A VDI's reserved pointer area between the header and the block map (docs/formats/vdi.md).
    case vdiPointerArea

    /// The largest pointer blob any format must be able to hold (the pointer's JSON document is
    /// bounded by this minus its 16-byte frame).
    public static let maxBlobLength = 64 << 10
    /// The VHDX user metadata item that holds the pointer.
    public static let vhdxItemID = GUID("6F1C2A9E-3B7D-4E15-9A42-B0071AB0F11E")!
}

extension VHDXView: NativeFormatView {
    public func allocatedUnitCount() throws -> UInt64 { allocatedBlockCount }
    public static let formatName = "vhdx"
    public static let pointerPlacement = PluginPointerPlacement.vhdxUserMetadataItem
    public var allocationUnit: UInt64 { UInt64(blockSize) }

    public func fileOffset(ofVirtual offset: UInt64) -> UInt64? { payload.fileOffset(ofVirtual: offset) }
}
