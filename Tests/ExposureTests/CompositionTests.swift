import Testing
import Foundation
@testable import BlockCore
@testable import Exposure

private func pattern(_ n: Int, seed: UInt8) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) } }

@Suite struct ComposedDiskTests {
    @Test func layoutIsMBRGapVolumeTail() throws {
        var mbr = [UInt8](repeating: 0xEE, count: 512)
        mbr[510] = 0x55; mbr[511] = 0xAA
        let vol = MemorySource(pattern(8192, seed: 7), zeroRanges: [4096..<8192])
        let disk = try ComposedDisk(mbr: mbr, volume: vol, partitionOffset: 2048 * 512, diskSize: 2 << 20)
        #expect(disk.size == 2 << 20)
        #expect(try disk.read(at: 0, count: 512) == mbr)
        #expect(try disk.read(at: 512, count: 2048 * 512 - 512).allSatisfy { $0 == 0 })
        #expect(try disk.read(at: 2048 * 512, count: 8192) == vol.contents)
        #expect(try disk.read(at: 2048 * 512 + 8192, count: 4096).allSatisfy { $0 == 0 })
        // A read spanning every region equals the concatenation.
        let all = try disk.read(at: 0, count: Int(disk.size))
        var expected = mbr + [UInt8](repeating: 0, count: 2048 * 512 - 512) + vol.contents
        expected += [UInt8](repeating: 0, count: Int(disk.size) - expected.count)
        #expect(all == expected)
        let ext = try disk.allExtents()
        #expect(ext == [
            Extent(offset: 0, length: 512, kind: .data),
            Extent(offset: 512, length: 2048 * 512 - 512, kind: .zero),
            Extent(offset: 2048 * 512, length: 4096, kind: .data),
            Extent(offset: 2048 * 512 + 4096, length: UInt64(disk.size) - 2048 * 512 - 4096, kind: .zero),
        ])
    }

    @Test func rejectsVolumesThatDoNotFit() {
        let vol = MemorySource([UInt8](repeating: 1, count: 4096))
        #expect(throws: FormatError.self) { try ComposedDisk(mbr: [UInt8](repeating: 0, count: 512), volume: vol, partitionOffset: 512, diskSize: 4096) }
        #expect(throws: FormatError.self) { try ComposedDisk(mbr: [UInt8](repeating: 0, count: 511), volume: vol, partitionOffset: 512, diskSize: 1 << 20) }
        #expect(throws: FormatError.self) { try ComposedDisk(mbr: [UInt8](repeating: 0, count: 512), volume: vol, partitionOffset: 100, diskSize: 1 << 20) }
    }

    @Test func defaultDiskSizeRoundsToMiB() {
        #expect(ComposedDisk.defaultDiskSize(partitionOffset: 1 << 20, volumeSize: 1) == 2 << 20)
        #expect(ComposedDisk.defaultDiskSize(partitionOffset: 1 << 20, volumeSize: 1 << 20) == 2 << 20)
    }
}

@Suite struct BootSectorPatchTests {
    /// A FAT32 boot sector as mkfs.fat lays it out (only the fields the detector reads).
    private func fat32Volume(hidden: UInt32) -> [UInt8] {
        var v = [UInt8](repeating: 0, count: 16 * 512)
        v[0] = 0xEB; v[1] = 0x58; v[2] = 0x90
        v.putLE16(512, at: 0x0B); v[0x0D] = 1
        v.putLE32(hidden, at: 0x1C)
        v.putLE16(6, at: 0x32)
        v.put(Array("FAT32   ".utf8), at: 0x52)
        v[510] = 0x55; v[511] = 0xAA
        let boot = Array(v[0..<512])
        v.put(boot, at: 6 * 512)
        return v
    }

    @Test func patchesFAT32PrimaryAndBackup() throws {
        let vol = MemorySource(fat32Volume(hidden: 63))
        let patches = try BootSectorPatch.patches(volume: vol, newStartLBA: 2048)
        #expect(patches.map(\.offset) == [0x1C, 6 * 512 + 0x1C])
        let patched = try PatchedSource(base: vol, patches: patches)
        #expect(try patched.read(at: 0x1C, count: 4) == [0x00, 0x08, 0, 0])
        #expect(try patched.read(at: 6 * 512 + 0x1C, count: 4) == [0x00, 0x08, 0, 0])
        #expect(vol.contents == fat32Volume(hidden: 63), "the base is never written")
        #expect(try BootSectorPatch.patches(volume: patched, newStartLBA: 2048).isEmpty, "already right: nothing to do")
    }

    @Test func leavesOtherFileSystemsAlone() throws {
        #expect(try BootSectorPatch.patches(volume: MemorySource([UInt8](repeating: 0, count: 4096)), newStartLBA: 2048).isEmpty)
    }

    @Test func patchedExtentsReportData() throws {
        let base = ZeroSource(size: 4096, kind: .absent)
        let p = try PatchedSource(base: base, patches: [.init(offset: 100, bytes: [1, 2, 3])])
        #expect(try p.allExtents() == [
            Extent(offset: 0, length: 100, kind: .absent), Extent(offset: 100, length: 3, kind: .data),
            Extent(offset: 103, length: 3993, kind: .absent),
        ])
        #expect(throws: FormatError.self) { try PatchedSource(base: base, patches: [.init(offset: 4095, bytes: [1, 2])]) }
        #expect(throws: FormatError.self) { try PatchedSource(base: base, patches: [.init(offset: 0, bytes: [1, 2]), .init(offset: 1, bytes: [1])]) }
    }
}

@Suite struct PluginPointerTests {
    private func sample() -> PluginPointer {
        PluginPointer(backupPath: "vm.bli", backupImageID: "abc", backupHeaderDigest: String(repeating: "0", count: 64),
                      composition: .init(kind: "volume", diskSize: 1 << 30, partitionStartLBA: 2048, mbrHex: "00",
                                         volumePatches: [.init(offset: 28, bytes: [0, 8, 0, 0])]),
                      vhdx: .init(blockSize: 1 << 21, logicalSectorSize: 512, physicalSectorSize: 4096, seedHex: "00", fileSize: 1 << 22, payloadStart: 1 << 22))
    }

    @Test func roundTripsAndIsDeterministic() throws {
        let bytes = try sample().encode()
        #expect(try PluginPointer.decode(bytes) == sample())
        #expect(try sample().encode() == bytes)
    }

    @Test func rejectsDamage() throws {
        var bytes = try sample().encode()
        bytes[20] ^= 1
        #expect(throws: FormatError.self) { try PluginPointer.decode(bytes) }
        #expect(throws: FormatError.self) { try PluginPointer.decode(Array(bytes.prefix(10))) }
        #expect(throws: FormatError.self) { try PluginPointer.decode([UInt8](repeating: 0, count: 64)) }
        var huge = try sample().encode()
        huge.putLE32(UInt32.max, at: 8)
        #expect(throws: FormatError.self) { try PluginPointer.decode(huge) }
    }
}
