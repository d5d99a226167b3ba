import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// `create` (the writer) and the synthesizer lay out VHDX files through one builder
/// (`VHDXSkeleton`) and check parameters with one validation (`VHDXDiskParameters.validate`).
@Suite("VHDX skeleton: one builder, one validation")
struct VHDXSkeletonTests {
    private static let MiB: UInt64 = 1 << 20

    /// For the same parameters and GUIDs, the writer's new dynamic file is byte for byte the
    /// synthesizer's view of an all-zero disk (whose BAT is all ZERO, as `create` writes it).
    @Test(arguments: [(UInt64(20) << 20, UInt32(1) << 20, UInt32(512)), (64 << 20, 2 << 20, 4096), (3 << 30, 32 << 20, 512)])
    func writerFileEqualsSynthesizedView(_ size: UInt64, _ blockSize: UInt32, _ sector: UInt32) throws {
        let view = try VHDXView(source: ZeroSource(size: size),
                                options: .init(blockSize: blockSize, logicalSectorSize: sector, physicalSectorSize: sector,
                                               seed: Array(1...16), creator: "skeleton test"))
        let dir = Scratch("skeleton")
        let path = dir.file("w.vhdx")
        try VHDXFile.writeNew(path: path, skeleton: view.skeletonStructures)
        let file = try RawFile(path: path)
        #expect(file.size == view.size)
        #expect(try SHA256.hash(file) == SHA256.hash(view))
        // And the reader sees the parameters it was given.
        let f = try VHDXFile.open(path: path)
        #expect(f.metadata.blockSize == blockSize && f.metadata.logicalSectorSize == sector && f.size == size)
    }

    /// The same bad parameters give the same typed error through `create` and the synthesizer.
    @Test func createAndSynthesizerShareTheValidation() throws {
        let dir = Scratch("skeleton-invalid")
        let cases: [(UInt64, UInt32, UInt32, VHDXSynthesisError)] = [
            (0, 1 << 20, 512, .emptyDisk),
            (Self.MiB + 512, 1 << 20, 4096, .virtualSizeNotSectorMultiple(size: Self.MiB + 512, sectorSize: 4096)),
            (Self.MiB, 3 << 20, 512, .invalidBlockSize(3 << 20)),
            (Self.MiB, 1 << 20, 1024, .invalidSectorSize(logical: 1024, physical: 1024)),
            (VHDX.maxVirtualSize + 512, 1 << 20, 512, .virtualSizeTooLarge(VHDX.maxVirtualSize + 512)),
        ]
        for (size, bs, sector, expected) in cases {
            #expect(throws: expected) {
                _ = try VHDXFile.createDynamic(path: dir.file("bad.vhdx"), virtualSize: size, blockSize: bs,
                                               logicalSectorSize: sector, physicalSectorSize: sector)
            }
            #expect(throws: expected) {
                _ = try VHDXView(source: ZeroSource(size: size),
                                 options: .init(blockSize: bs, logicalSectorSize: sector, physicalSectorSize: sector))
            }
        }
    }

    /// The one rule that is the synthesizer's own: physical ≥ logical. `create` keeps accepting
    /// 4096/512 (a child copies its parent's sizes; qemu-img writes 512 physical for any logical).
    @Test func physicalBelowLogicalIsRefusedOnlyBySynthesis() throws {
        let dir = Scratch("skeleton-sectors")
        let f = try VHDXFile.createDynamic(path: dir.file("p.vhdx"), virtualSize: 2 * Self.MiB, blockSize: 1 << 20,
                                           logicalSectorSize: 4096, physicalSectorSize: 512)
        #expect(f.metadata.logicalSectorSize == 4096 && f.metadata.physicalSectorSize == 512)
        #expect(throws: VHDXSynthesisError.invalidSectorSize(logical: 4096, physical: 512)) {
            _ = try VHDXView(source: ZeroSource(size: 2 * Self.MiB),
                             options: .init(blockSize: 1 << 20, logicalSectorSize: 4096, physicalSectorSize: 512))
        }
    }
}
