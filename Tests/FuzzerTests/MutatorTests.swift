import BlockCore
import DiskFormats
import Foundation
import Testing
import TestSupport
@testable import Fuzzer

/// Seeds are valid for BootLab's own readers, field maps find the checksums, structure-aware
/// mutants keep them valid (and --break-checksums breaks one), every mutant is reproducible.
struct MutatorTests {
    static let formats = ["vhdx", "mbr", "gpt", "bli"]

    @Test func randomIsDeterministicPerStream() {
        var a = FuzzRandom(seed: 7, stream: 3), b = FuzzRandom(seed: 7, stream: 3), c = FuzzRandom(seed: 7, stream: 4)
        let x = (0..<8).map { _ in a.next() }
        #expect(x == (0..<8).map { _ in b.next() })
        #expect(x != (0..<8).map { _ in c.next() })
    }

    @Test(arguments: formats)
    func seedsAreValidAndTheirChecksumsHold(_ name: String) throws {
        let format = try FuzzFormats.named(name)
        var r = FuzzRandom(seed: 1)
        let seeds = try format.seeds(count: 6, random: &r)
        #expect(seeds.count >= 6, "vhdx adds children whose parent chain loops")
        let scratch = Scratch("fuzz-seeds")
        for s in seeds {
            let m = format.map(s.bytes)
            #expect(!m.fields.isEmpty, "\(s.name): fields")
            let holds = ChecksumFixer.holds(s.bytes, m.checksums)
            #expect(holds, "\(s.name): checksums as written")
            if s.name.hasSuffix("-diff-loop") {
                // Named as every run's input, the child is its own parent: a reader must refuse it.
                let p = scratch.dir(s.name) + "/input.vhdx"
                try Data(s.bytes).write(to: URL(fileURLWithPath: p))
                #expect(throws: (any Error).self) { try format.readInProcess(path: p) }
                continue
            }
            let p = scratch.file("\(s.name).\(format.fileExtension)")
            try Data(s.bytes).write(to: URL(fileURLWithPath: p))
            try format.readInProcess(path: p)
        }
        if name != "mbr" { #expect(seeds.contains { !format.map($0.bytes).checksums.isEmpty }) }
        var again = FuzzRandom(seed: 1)
        #expect(try format.seeds(count: 6, random: &again) == seeds, "seeds are deterministic")
    }

    @Test(arguments: formats)
    func structuredMutantsAreReproducibleAndKeepChecksums(_ name: String) throws {
        let format = try FuzzFormats.named(name)
        var r = FuzzRandom(seed: 2)
        let seed = try format.seeds(count: 2, random: &r)[1].bytes
        for run in 0..<40 {
            var a = FuzzRandom(seed: 99, stream: UInt64(run)), b = FuzzRandom(seed: 99, stream: UInt64(run))
            let m1 = Mutator.mutate(seed, format: format, mode: .structured, random: &a)
            let m2 = Mutator.mutate(seed, format: format, mode: .structured, random: &b)
            let same = m1.bytes == m2.bytes && m1.trace == m2.trace
            #expect(same, "run \(run): byte for byte")
            #expect(!m1.kinds.isEmpty)
            let specs = format.map(m1.bytes).checksums
            // Overlapping structures (an offset moved onto another table) cannot all hold.
            let holds = ChecksumFixer.holds(m1.bytes, specs) || !ChecksumFixer.consistent(specs)
            #expect(holds, "run \(run): \(m1.trace)")
        }
    }

    @Test func breakChecksumsLeavesOneWrong() throws {
        let format = try FuzzFormats.named("vhdx")
        var r = FuzzRandom(seed: 3)
        let seed = try format.seeds(count: 1, random: &r)[0].bytes
        var broken = 0
        for run in 0..<30 {
            var g = FuzzRandom(seed: 5, stream: UInt64(run))
            let m = Mutator.mutate(seed, format: format, mode: .breakChecksums, random: &g)
            if m.kinds.contains(.breakChecksum) {
                broken += 1
                let holds = ChecksumFixer.holds(m.bytes, format.map(m.bytes).checksums)
                #expect(!holds)
            }
        }
        #expect(broken > 5 && broken < 25)
    }

    @Test func fixedVHDXHeaderParsesAfterAFieldChange() throws {
        let format = try FuzzFormats.named("vhdx")
        var r = FuzzRandom(seed: 4)
        var b = try format.seeds(count: 1, random: &r)[0].bytes
        b.putLE64(77, at: 0x10000 + 8)   // header 1 sequence number
        #expect(throws: (any Error).self) { try VHDXHeader.parse(Array(b[0x10000..<0x11000]), at: 0x10000, name: "header 1") }
        ChecksumFixer.fix(&b, format.map(b).checksums)
        #expect(try VHDXHeader.parse(Array(b[0x10000..<0x11000]), at: 0x10000, name: "header 1").sequenceNumber == 77)
    }

    @Test func dumbMutantsTouchBytesOnly() throws {
        let seed = [UInt8](repeating: 0, count: 4096)
        var g = FuzzRandom(seed: 1, stream: 0)
        let m = Mutator.mutate(seed, format: try FuzzFormats.named("vhdx"), mode: .dumb, random: &g)
        let changed = m.bytes.count == seed.count && m.bytes != seed
        #expect(changed)
        #expect(m.kinds.allSatisfy { $0 == .dumbBitFlip || $0 == .dumbByte })
    }

    @Test func fieldValuesRoundTripInBothByteOrders() {
        var b = [UInt8](repeating: 0, count: 16)
        b.setValue(0x0102_0304, at: 2, width: 4, endian: .big)
        #expect(Array(b[2..<6]) == [1, 2, 3, 4])
        #expect(b.value(at: 2, width: 4, endian: .big) == 0x0102_0304)
        b.setValue(0xAABB, at: 8, width: 2, endian: .little)
        #expect(b.value(at: 8, width: 2, endian: .little) == 0xAABB && b[8] == 0xBB)
        #expect(b.value(at: 15, width: 4, endian: .little) == 0, "past the end reads as 0")
    }

    @Test func vhdChecksumIsOnesComplement() {
        var f = [UInt8](repeating: 0, count: 512)
        f.put(Array("conectix".utf8), at: 0)
        let spec = ChecksumSpec("footer", .onesComplement, covered: 0..<512, field: 64, endian: .big)
        ChecksumFixer.fix(&f, [spec])
        let sum = Array("conectix".utf8).reduce(UInt32(0)) { $0 + UInt32($1) }
        #expect(f.value(at: 64, width: 4, endian: .big) == UInt64(~sum))
    }

    @Test(arguments: ["vmdk", "vhd", "qcow2", "vdi"])
    func driverFormatsSayWhenTheirDriverIsMissing(_ name: String) throws {
        let format = try FuzzFormats.named(name)
        var r = FuzzRandom(seed: 1)
        if DiskFormatRegistry.driver(named: name) == nil {
            #expect(throws: FuzzError.driverMissing(name)) { _ = try format.seeds(count: 1, random: &r) }
        } else {
            let seeds = try format.seeds(count: 2, random: &r)
            #expect(!format.map(seeds[0].bytes).fields.isEmpty)
        }
        #expect(throws: FuzzError.unknownFormat("nope", known: FuzzFormats.names)) { _ = try FuzzFormats.named("nope") }
    }
}

/// The spec-written field maps agree with files another tool wrote (qemu-img): VHD sums hold,
/// tables are found.
struct ForeignMapTests {
    @Test(arguments: [("vhd", "vpc", "dynamic"), ("vhd", "vpc", "fixed"), ("qcow2", "qcow2", ""), ("vmdk", "vmdk", ""), ("vdi", "vdi", "")])
    func mapsMatchQemuImgFiles(_ format: String, _ qemuFormat: String, _ subformat: String) throws {
        if let missing = toolsMissing(["qemu-img"]) { Issue.record("skipped: \(missing)"); return }
        let scratch = Scratch("fuzz-foreign")
        let p = scratch.file("a.\(format)")
        let r = try run("qemu-img", ["create", "-q", "-f", qemuFormat] + (subformat.isEmpty ? [] : ["-o", "subformat=\(subformat)"]) + [p, "8M"])
        #expect(r.status == 0)
        let b = [UInt8](try Data(contentsOf: URL(fileURLWithPath: p)))
        let m = try FuzzFormats.named(format).map(b)
        let names = Set(m.fields.map(\.structure))
        let holds = ChecksumFixer.holds(b, m.checksums)
        #expect(holds)
        switch format {
        case "vhd":
            #expect(m.checksums.count == (subformat == "dynamic" ? 3 : 1))
            if subformat == "dynamic" { #expect(names.contains("dynamic header") && names.contains("BAT")) }
        case "qcow2": #expect(names.contains("L1 table") && names.contains("refcount table"))
        case "vmdk": #expect(names.contains("grain directory"))
        default: #expect(names.contains("block map"))
        }
    }
}
