import BlockCore
import Foundation
import Testing
@testable import Reconfigure

/// GRUB boot code from a volume, without an appliance: layout, determinism, the module-directory
/// choice, and every refusal. The volume is a small ext4 image holding the host's grub-pc-bin
/// modules; the real-distribution boot is in GrubDebianBootTests.
@Suite struct GrubBootCodeTests {
    static let uuid = "6a7e0c5d-1b2f-4c3d-8e9f-00000000b007"

    @Test func layoutOfRegeneratedBootCode() throws {
        let dir = try Fixture.tempDir("grub-layout")
        defer { try? FileManager.default.removeItem(at: dir) }
        let vol = dir.appendingPathComponent("vol.raw").path
        try GrubFixture.smallVolume(at: vol, uuid: Self.uuid)
        let sector0 = try GrubFixture.genericMBR(startLBA: 2048, sectors: 32768, in: dir)
        let code = try GrubBootCode.regenerate(volumePath: vol, partitionStartLBA: 2048, sector0: sector0)

        #expect(code.partitionNumber == 1)
        #expect(code.filesystemUUID == Self.uuid)
        #expect(code.configPath == "/boot/grub/grub.cfg")
        // No grub-install ever ran on this volume: the modules come from grub-pc-bin's directory
        // and normal mode is pointed at grub.cfg explicitly.
        #expect(code.moduleDirectory == "/usr/lib/grub/i386-pc")
        #expect(code.prefix == "(hd0,msdos1)/usr/lib/grub")
        #expect(code.embeddedConfig == """
            search.fs_uuid \(Self.uuid) root hd0,msdos1
            set prefix=($root)/usr/lib/grub
            insmod normal
            normal ($root)/boot/grub/grub.cfg

            """)
        #expect(code.modules == ["biosdisk", "part_msdos", "ext2", "search_fs_uuid"])

        #expect(code.patches.count == 2)
        let lba0 = code.patches[0], core = code.patches[1]
        #expect(lba0.offset == 0 && lba0.bytes.count == 512)
        let bootImg = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "/usr/lib/grub/i386-pc/boot.img")))
        // boot.img's code, except the two fields grub-bios-setup sets; then the disk's own tail.
        for i in 0..<440 where !(0x5C..<0x64).contains(i) && !(0x66..<0x68).contains(i) {
            #expect(lba0.bytes[i] == bootImg[i], "LBA 0 byte \(i)")
        }
        #expect(lba0.bytes.le64(0x5C) == 1, "kernel_sector")
        #expect(Array(lba0.bytes[0x66..<0x68]) == [0x90, 0x90], "boot-drive check NOPed")
        #expect(Array(lba0.bytes[440..<512]) == Array(sector0[440..<512]), "signature, table and 55AA kept")
        #expect(core.offset == 512)
        #expect(core.bytes.count == code.coreSectors * 512)
        #expect(code.coreSectors > 40 && code.coreSectors < 62, "core.img is \(code.coreSectors) sectors")
        #expect(core.bytes.le64(0x1F4) == 2 && Int(core.bytes.le16(0x1FC)) == code.coreSectors - 1, "diskboot blocklist")

        // Deterministic, and the same from a block source that is not a file.
        let again = try GrubBootCode.regenerate(volumePath: vol, partitionStartLBA: 2048, sector0: sector0)
        #expect(again == code)
        let viaSource = try GrubBootCode.regenerate(volume: WrappedSource(inner: try RawFile(path: vol)), partitionStartLBA: 2048, sector0: sector0)
        #expect(viaSource == code)

        // Applied to a layer, the composed disk now carries GRUB; the generic MBR did not.
        let layer = MemorySource([UInt8](repeating: 0, count: 2048 * 512))
        #expect(try !GrubBootCode.isInstalled(sector0: sector0) { try layer.read(at: $0 * 512, count: 512) })
        try code.apply(to: layer)
        #expect(try layer.read(at: 0, count: 512) == lba0.bytes)
        #expect(try layer.read(at: 512, count: core.bytes.count) == core.bytes)
        #expect(try GrubBootCode.isInstalled(sector0: lba0.bytes) { try layer.read(at: $0 * 512, count: 512) })
        // GRUB's boot.img with an empty gap is not an installed GRUB.
        #expect(try !GrubBootCode.isInstalled(sector0: lba0.bytes) { _ in [UInt8](repeating: 0, count: 512) })
    }

    @Test func prefersModulesThatGrubInstallCopied() throws {
        let dir = try Fixture.tempDir("grub-installed")
        defer { try? FileManager.default.removeItem(at: dir) }
        let vol = dir.appendingPathComponent("vol.raw").path
        try GrubFixture.smallVolume(at: vol, uuid: Self.uuid, grubInstalled: true)
        let sector0 = try GrubFixture.genericMBR(startLBA: 2048, sectors: 32768, in: dir)
        let code = try GrubBootCode.regenerate(volumePath: vol, partitionStartLBA: 2048, sector0: sector0)
        #expect(code.moduleDirectory == "/boot/grub/i386-pc")
        #expect(code.prefix == "(hd0,msdos1)/boot/grub")
        // normal.mod reads $prefix/grub.cfg by itself.
        #expect(code.embeddedConfig == "search.fs_uuid \(Self.uuid) root hd0,msdos1\nset prefix=($root)/boot/grub\n")
    }

    @Test func refusals() throws {
        let dir = try Fixture.tempDir("grub-refuse")
        defer { try? FileManager.default.removeItem(at: dir) }
        let vol = dir.appendingPathComponent("vol.raw").path
        try GrubFixture.smallVolume(at: vol, uuid: Self.uuid)

        // An old DOS layout (partition at LBA 63): the minimal core fits in its 62 free sectors...
        let dos = try GrubFixture.genericMBR(startLBA: 63, sectors: 32768, in: dir)
        let small = try GrubBootCode.regenerate(volumePath: vol, partitionStartLBA: 63, sector0: dos)
        #expect(small.coreSectors <= 62)
        // ...a core with more modules built in does not, and nothing is produced.
        let big = ["normal", "linux", "configfile", "echo", "test", "search", "gzio", "minicmd", "terminal", "extcmd"]
        #expect {
            try GrubBootCode.regenerate(volumePath: vol, partitionStartLBA: 63, sector0: dos, extraModules: big)
        } throws: { error in
            guard case GrubError.doesNotFit(let sectors, let gap, let lba) = error else { return false }
            return sectors > 62 && gap == 62 && lba == 63 && "\(error)".contains("first partition starts at LBA 63")
        }

        let mbr = try GrubFixture.genericMBR(startLBA: 2048, sectors: 32768, in: dir)
        // The composed disk must place the volume where the caller says.
        #expect {
            try GrubBootCode.regenerate(volumePath: vol, partitionStartLBA: 4096, sector0: mbr)
        } throws: { error in
            guard case GrubError.partitionTable(let s) = error else { return false }
            return s.contains("no primary partition starts at LBA 4096")
        }
        // Sector 0 without 55AA is no MBR.
        var blank = mbr
        blank[510] = 0
        #expect {
            try GrubBootCode.regenerate(volumePath: vol, partitionStartLBA: 2048, sector0: blank)
        } throws: { error in
            guard case GrubError.partitionTable(let s) = error else { return false }
            return s.contains("boot signature")
        }
        // A volume without grub.cfg is not GRUB-booted.
        let plain = dir.appendingPathComponent("plain.raw").path
        try GrubFixture.smallVolume(at: plain, uuid: Self.uuid, withGrub: false)
        #expect {
            try GrubBootCode.regenerate(volumePath: plain, partitionStartLBA: 2048, sector0: mbr)
        } throws: { error in
            guard case GrubError.noGrubConfiguration = error else { return false }
            return true
        }
    }
}
