import BlockCore
import Testing
@testable import DiskFormats

/// The contract of `NativeFormatView`, checked on the view of every format in
/// `DiskFormatRegistry` (a format inherits these tests by registering): the skeleton is the
/// file's first `payloadStart` bytes and the trailer its last bytes, neither depends on the disk's
/// data, payload carries virtual ranges unchanged at `fileOffset(ofVirtual:)`, and unallocated
/// units have none.
struct NativeFormatViewContractTests {
    static let blockSize: UInt32 = 1 << 20
    static let virtualSize: UInt64 = 6 << 20

    /// A disk whose blocks 1 and 4 hold data and the rest are zero ranges (unallocated).
    static func disk(fill: UInt8) -> MemorySource {
        var bytes = [UInt8](repeating: 0, count: Int(virtualSize))
        for block in [1, 4] {
            for i in 0..<Int(blockSize) { bytes[block * Int(blockSize) + i] = fill &+ UInt8(truncatingIfNeeded: i &* 31 &+ block) }
        }
        let bs = UInt64(blockSize)
        return MemorySource(bytes, zeroRanges: [0..<bs, 2 * bs..<4 * bs, 5 * bs..<6 * bs])
    }

    static func views(of source: any BlockSource) throws -> [any NativeFormatView] {
        try DiskFormatRegistry.drivers.map {
            try $0.view(of: source, options: NativeFormatOptions(allocationUnit: UInt64(blockSize), seed: Array(repeating: 7, count: 16)))
        }
    }

    @Test func everyRegisteredFormatHasAView() throws {
        let names = try Self.views(of: Self.disk(fill: 1)).map { type(of: $0).formatName }
        #expect(names == DiskFormatRegistry.names)
    }

    @Test func trailerIsTheFileTailAndIgnoresData() throws {
        let a = try Self.views(of: Self.disk(fill: 1)), b = try Self.views(of: Self.disk(fill: 200))
        for (va, vb) in zip(a, b) {
            let name = type(of: va).formatName
            #expect(va.payloadStart <= va.trailerStart && va.trailerStart <= va.size, "\(name)")
            let trailer = try va.trailer()
            #expect(UInt64(trailer.count) == va.size - va.trailerStart, "\(name)")
            #expect(try va.read(at: va.trailerStart, count: trailer.count) == trailer, "\(name)")
            #expect(try vb.trailer() == trailer, "\(name): the trailer must not depend on data")
            #expect(try va.allocatedUnitCount() > 0, "\(name)")
        }
    }

    @Test func skeletonIsTheFileHeadAndIgnoresData() throws {
        let a = try Self.views(of: Self.disk(fill: 1)), b = try Self.views(of: Self.disk(fill: 200))
        for (va, vb) in zip(a, b) {
            let skeleton = try va.skeleton()
            #expect(UInt64(skeleton.count) == va.payloadStart, "\(type(of: va).formatName)")
            #expect(try va.read(at: 0, count: Int(va.payloadStart)) == skeleton, "\(type(of: va).formatName)")
            #expect(try vb.skeleton() == skeleton, "\(type(of: va).formatName): the skeleton must not depend on data")
        }
    }

    @Test func payloadCarriesVirtualRangesUnchanged() throws {
        let disk = Self.disk(fill: 7)
        let bs = UInt64(Self.blockSize)
        for view in try Self.views(of: disk) {
            let name = type(of: view).formatName
            #expect(view.virtualSize == Self.virtualSize, "\(name)")
            for offset: UInt64 in [bs, bs + 4095, 4 * bs + 12345, 5 * bs - 1] {
                let at = try #require(view.fileOffset(ofVirtual: offset), "\(name): virtual \(offset) is allocated")
                #expect(at >= view.payloadStart, "\(name)")
                #expect(try view.read(at: at, count: 1) == disk.read(at: offset, count: 1), "\(name): virtual \(offset)")
            }
            for offset: UInt64 in [0, 2 * bs + 7, 3 * bs, 5 * bs, Self.virtualSize, Self.virtualSize + 1] {
                #expect(view.fileOffset(ofVirtual: offset) == nil, "\(name): virtual \(offset) has no payload")
            }
            #expect(!view.layoutDump().isEmpty)
        }
    }
}
