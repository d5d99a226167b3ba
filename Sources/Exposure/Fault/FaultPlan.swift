import BackupImage
import BlockCore
import Foundation

/// Deliberate, documented corruption for proving that the lab catches breakage (nbdkit's `evil`
/// filter in spirit). Never active unless asked for explicitly: the hidden `--inject-fault SPEC`
/// option of `bootlab mount`/`serve`/`expose` (nbdkit plugin parameter `inject-fault=SPEC`), or
/// the lab's `RunOptions.faults`, which passes that option to its children. SPEC is a
/// comma-separated list:
///
/// - `vhdx-byte:OFFSET` — every read of the exposed VHDX *file* returns the byte at OFFSET
///   inverted (as if the synthesizer had rendered it wrong). Bytes are the fault, so it is a
///   layer: `FaultInjectionSource`, stacked over the plugin's file bytes by `LayerStack`.
///   `vhdx-byte:payload+N` counts from the payload area's start (the first data block).
/// - `file-byte:OFFSET`, `file-byte:payload+N` — the same for any native format's file.
/// - `structure-byte:NAME` — the byte `DiskFormatDriver.structureSites` names inside structure
///   NAME of the exposed file's format ("BAT entry", "grain table entry", "L2 entry", "footer
///   checksum", "block map entry", …), resolved from the plugin file's skeleton when the layer is
///   stacked; a name the format does not have is an error listing the ones it has.
/// - `mbr-byte:OFFSET` — the MBR synthesized for a volume-only backup has byte OFFSET (0–511)
///   inverted before it is recorded in the plugin (as if MBR synthesis were wrong). A step is
///   the fault, so it is an explicit option of that step: `DiskComposer.Options.faults`.
///
/// Faults of a step rather than of bytes (test-only, used by `bootlab lab mutate`'s catalog;
/// docs/mutation-testing.md). The composition ones are recorded in the plugin's pointer, as a
/// wrong composer would record them:
/// - `volume-byte:OFFSET` — the composed disk shows byte OFFSET of the volume inverted (a
///   boot-sector/BPB byte written wrong), as one more volume patch.
/// - `skip-boot-patch` — the hidden-sectors patches of a relocated FAT/NTFS volume are left out.
/// - `partition-shift:N` — the volume is placed N sectors after the start its MBR entry names.
/// - `disk-grow:BYTES` — the composed disk is BYTES larger than the composer decided.
/// - `omit-driver:NAME` — `bootlab reconfigure` leaves module NAME out of what it injects.
/// - `stale-block` — the first block the newest image of a chain holds itself (one that an older
///   image also holds) reads as the older image's version: a cache keyed without the image.
/// - `drop-write:payload` — the write overlay acknowledges and discards the first write at or
///   past the served file's payload start (metadata updates before it still land).
///
/// Offsets are decimal or `0x` hex. A malformed value is an error, never silently ignored: a
/// fault test that silently injects nothing would lie. Production code never reads faults from
/// the environment.
public struct FaultPlan: Sendable, Equatable, CustomStringConvertible {
    /// The command-line option (and, without the dashes, the nbdkit plugin parameter) that carries a plan.
    public static let optionName = "inject-fault"

    public enum Site: Sendable, Equatable {
        case vhdxByte(UInt64)
        /// Relative to the VHDX payload start.
        case vhdxPayloadByte(UInt64)
        /// A structure of the exposed file's format, by `structureSites` name.
        case structureByte(String)
        case mbrByte(Int)
        case volumeByte(UInt64)
        case skipBootPatch
        case partitionShift(UInt64)
        case diskGrow(UInt64)
        case omitDriver(String)
        case staleBlock
        case dropPayloadWrite
    }

    public var sites: [Site]

    public init(_ sites: [Site] = []) { self.sites = sites }

    public static let none = FaultPlan()
    public var isEmpty: Bool { sites.isEmpty }

    public init(parsing text: String) throws {
        var sites: [Site] = []
        for item in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
            var parts = item.split(separator: ":", maxSplits: 1).map(String.init)
            if parts.count == 2, parts[0] == "structure-byte", !parts[1].isEmpty {
                sites.append(.structureByte(parts[1]))
                continue
            }
            if parts.count == 2, parts[0] == "omit-driver", !parts[1].isEmpty {
                sites.append(.omitDriver(parts[1]))
                continue
            }
            switch item {
            case "skip-boot-patch": sites.append(.skipBootPatch); continue
            case "stale-block": sites.append(.staleBlock); continue
            case "drop-write:payload": sites.append(.dropPayloadWrite); continue
            default: break
            }
            if parts.first == "file-byte" { parts[0] = "vhdx-byte" }
            if parts.count == 2, parts[0] == "vhdx-byte", parts[1].hasPrefix("payload+"), let n = Self.number(String(parts[1].dropFirst(8))) {
                sites.append(.vhdxPayloadByte(n))
                continue
            }
            guard parts.count == 2, let offset = Self.number(parts[1]) else {
                throw FaultPlanError(text: item, reason: "expected KIND:OFFSET, e.g. vhdx-byte:0x10000")
            }
            switch parts[0] {
            case "vhdx-byte": sites.append(.vhdxByte(offset))
            case "mbr-byte":
                guard offset < 512 else { throw FaultPlanError(text: item, reason: "an MBR byte offset is 0–511") }
                sites.append(.mbrByte(Int(offset)))
            case "volume-byte": sites.append(.volumeByte(offset))
            case "partition-shift":
                guard offset > 0, offset < 1 << 20 else { throw FaultPlanError(text: item, reason: "a partition shift is 1 to 2^20-1 sectors") }
                sites.append(.partitionShift(offset))
            case "disk-grow":
                guard offset > 0, offset % 512 == 0, offset <= 1 << 40 else { throw FaultPlanError(text: item, reason: "a disk growth is a positive multiple of 512, at most 1 TiB") }
                sites.append(.diskGrow(offset))
            default: throw FaultPlanError(text: item, reason: "unknown fault kind '\(parts[0])' (file-byte, vhdx-byte, structure-byte, mbr-byte, volume-byte, skip-boot-patch, partition-shift, disk-grow, omit-driver, stale-block, drop-write:payload)")
            }
        }
        self.sites = sites
    }

    public var description: String {
        sites.map {
            switch $0 {
            case .vhdxByte(let o): return "vhdx-byte:\(o)"
            case .vhdxPayloadByte(let o): return "vhdx-byte:payload+\(o)"
            case .structureByte(let n): return "structure-byte:\(n)"
            case .mbrByte(let o): return "mbr-byte:\(o)"
            case .volumeByte(let o): return "volume-byte:\(o)"
            case .skipBootPatch: return "skip-boot-patch"
            case .partitionShift(let n): return "partition-shift:\(n)"
            case .diskGrow(let n): return "disk-grow:\(n)"
            case .omitDriver(let n): return "omit-driver:\(n)"
            case .staleBlock: return "stale-block"
            case .dropPayloadWrite: return "drop-write:payload"
            }
        }.joined(separator: ",")
    }

    /// Inverts the bytes of `buffer` (holding file bytes from `offset`) that a `vhdx-byte` site
    /// names; `payloadStart` resolves `payload+N`.
    func corruptVHDX(_ buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, payloadStart: UInt64, structures: [String: UInt64]) {
        for site in sites {
            let at: UInt64
            switch site {
            case .vhdxByte(let o): at = o
            case .vhdxPayloadByte(let o): at = payloadStart + o
            case .structureByte(let name):
                guard let o = structures[name] else { continue }
                at = o
            default: continue
            }
            if at >= offset && at - offset < UInt64(buffer.count) { buffer[Int(at - offset)] ^= 0xFF }
        }
    }

    /// Whether any site corrupts served VHDX bytes (the others act on a step, not on bytes).
    public var corruptsVHDXBytes: Bool {
        sites.contains {
            switch $0 {
            case .vhdxByte, .vhdxPayloadByte, .structureByte: return true
            default: return false
            }
        }
    }

    /// Module names `omit-driver` leaves out of a reconfiguration.
    public var omittedDrivers: [String] { sites.compactMap { if case .omitDriver(let n) = $0 { return n } else { return nil } } }
    public var servesStaleBlock: Bool { sites.contains(.staleBlock) }
    public var dropsPayloadWrite: Bool { sites.contains(.dropPayloadWrite) }
    public var skipsBootPatch: Bool { sites.contains(.skipBootPatch) }
    public var partitionShift: UInt64 { sites.reduce(0) { if case .partitionShift(let n) = $1 { return $0 + n } else { return $0 } } }
    public var diskGrowth: UInt64 { sites.reduce(0) { if case .diskGrow(let n) = $1 { return $0 + n } else { return $0 } } }
    public var volumeBytes: [UInt64] { sites.compactMap { if case .volumeByte(let o) = $0 { return o } else { return nil } } }

    /// Inverts the bytes of a synthesized MBR sector that an `mbr-byte` site names.
    public func corruptMBR(_ sector: inout [UInt8]) {
        for case .mbrByte(let at) in sites where at < sector.count { sector[at] ^= 0xFF }
    }

    static func number(_ s: String) -> UInt64? {
        s.hasPrefix("0x") ? UInt64(s.dropFirst(2), radix: 16) : UInt64(s)
    }
}

public struct FaultPlanError: Error, CustomStringConvertible {
    public var text: String
    public var reason: String
    public var description: String { "--\(FaultPlan.optionName) '\(text)': \(reason)" }
}

/// Byte faults as a layer (nbdkit's `evil` filter): the bytes of `base` — the exposed VHDX file —
/// with the plan's `vhdx-byte` sites inverted on every read. Extents pass through unchanged: a
/// flipped byte stays where data already is (the skeleton, or an allocated payload block).
public struct FaultInjectionSource: BlockSource {
    public let base: any BlockSource
    public let plan: FaultPlan
    /// Where `vhdx-byte:payload+N` counts from.
    public let payloadStart: UInt64
    /// `structure-byte` names resolved to file offsets.
    public let structures: [String: UInt64]

    public init(_ base: any BlockSource, plan: FaultPlan, payloadStart: UInt64, structures: [String: UInt64] = [:]) {
        self.base = base
        self.plan = plan
        self.payloadStart = payloadStart
        self.structures = structures
    }

    /// The `structure-byte` names of `plan` resolved with `sites`; an unknown name is an error.
    public static func resolve(_ plan: FaultPlan, sites: [String: UInt64], format: String) throws -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for case .structureByte(let name) in plan.sites {
            guard let o = sites[name] else {
                throw FaultPlanError(text: "structure-byte:\(name)",
                                     reason: "\(format) has no structure '\(name)' (it has: \(sites.keys.sorted().joined(separator: ", ")))")
            }
            out[name] = o
        }
        return out
    }

    public var size: UInt64 { base.size }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try base.read(at: offset, into: buffer)
        plan.corruptVHDX(buffer, at: offset, payloadStart: payloadStart, structures: structures)
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] { try base.extents(in: range) }
}

/// The `stale-block` fault (test-only) as a layer over a backup chain's reader: the first block
/// the newest image holds itself, where an older image of the chain also holds it, reads as the
/// older image's version — what a block cache keyed without the image would serve.
public struct StaleBlockSource: BlockSource {
    public let base: BackupImageReader
    public let block: Int
    let older: BackupImageReader

    public init(_ base: BackupImageReader) throws {
        guard let parent = base.parent, let b = base.firstBlockShadowingParent() else {
            throw FaultPlanError(text: "stale-block", reason: "the backup is not a chain whose newest image replaces a block of an older one")
        }
        self.base = base
        self.block = b
        self.older = parent
    }

    public var size: UInt64 { base.size }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try base.read(at: offset, into: buffer)
        let bs = UInt64(base.blockSize)
        let lo = max(offset, UInt64(block) * bs), hi = min(offset + UInt64(buffer.count), min(size, UInt64(block + 1) * bs))
        guard lo < hi else { return }
        try older.read(at: lo, into: UnsafeMutableRawBufferPointer(rebasing: buffer[Int(lo - offset)..<Int(hi - offset)]))
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] { try base.extents(in: range) }
}
