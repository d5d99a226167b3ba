import Foundation
import Testing
import TestSupport
@testable import BackupImage
@testable import BlockCore
@testable import DiskFormats

/// The volume set manifest is JSON decoded by Foundation, then validated (`validate()`): every
/// rule has a case here, each expecting the field it names; and deterministic mutants of a valid
/// manifest (bytes flipped, inserted, cut) only ever decode or fail with a typed error.
@Suite struct BackupSetManifestTests {
    static let digest = String(repeating: "ab", count: 32)

    static func valid() -> BackupSetManifest {
        BackupSetManifest(diskGUID: GUID("5C4B3A29-1807-4F6E-9D5C-4B3A29180706")!, sectorSize: 512, diskSize: 32 << 20,
                          entryCount: 128, entrySize: 128, volumes: [
                              .init(file: "vm.p1.bli", imageID: GUID("0A1B2C3D-4E5F-4607-8819-2A3B4C5D6E7F")!, headerDigest: digest, number: 1,
                                    typeGUID: GPTPartitionType.efiSystem, uniqueGUID: GUID("1A1B2C3D-4E5F-4607-8819-2A3B4C5D6E7F")!,
                                    attributes: 0, name: "EFI system partition", firstLBA: 2048, size: 8 << 20),
                              .init(file: "vm.p2.bli", imageID: GUID("2A1B2C3D-4E5F-4607-8819-2A3B4C5D6E7F")!, headerDigest: digest, number: 2,
                                    typeGUID: GPTPartitionType.efiSystem, uniqueGUID: GUID("3A1B2C3D-4E5F-4607-8819-2A3B4C5D6E7F")!,
                                    attributes: 4, name: "root", firstLBA: 20480, size: 6 << 20),
                          ])
    }

    @Test func roundTripAndDeterministicBytes() throws {
        let m = Self.valid()
        let bytes = try m.encode()
        #expect(try BackupSetManifest.decode(bytes) == m)
        #expect(try m.encode() == bytes)
        #expect(bytes.last == 0x0A)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.contains("\"format\" : \"bootlab-volume-set\""))
    }

    /// Breaks a valid manifest the `index`-th way; returns the field its error must name.
    static func breakIt(_ index: Int, _ m: inout BackupSetManifest) -> String {
        switch index {
        case 0: m.sectorSize = 1000; return "sectorSize"
        case 1: m.entrySize = 100; return "entrySize"
        case 2: m.entrySize = 8192; return "entrySize"
        case 3: m.entryCount = 0; return "entryCount"
        case 4: m.entryCount = 1 << 20; return "entryCount"
        case 5: m.diskSize = (32 << 20) + 1; return "diskSize"
        case 6: m.diskSize = 512 * 40; return "diskSize"
        case 7: m.diskSize = UInt64.max - 511; return "diskSize"
        case 8: m.volumes = []; return "volumes"
        case 9: m.entryCount = 1; return "volumes"
        case 10: m.volumes[1].file = "../vm.p2.bli"; return "volumes[1].file"
        case 11: m.volumes[1].file = ".."; return "volumes[1].file"
        case 12: m.volumes[1].file = ""; return "volumes[1].file"
        case 13: m.volumes[1].file = String(repeating: "x", count: 256); return "volumes[1].file"
        case 14: m.volumes[1].file = "vm.p1.bli"; return "volumes[1].file"
        case 15: m.volumes[1].imageID = m.volumes[0].imageID; return "volumes[1].imageID"
        case 16: m.volumes[1].headerDigest = "abc"; return "volumes[1].headerDigest"
        case 17: m.volumes[1].headerDigest = String(repeating: "zz", count: 32); return "volumes[1].headerDigest"
        case 18: m.volumes[1].number = 0; return "volumes[1].number"
        case 19: m.volumes[1].number = 129; return "volumes[1].number"
        case 20: m.volumes[1].number = 1; return "volumes[1].number"
        case 21: m.volumes[1].typeGUID = GUID(bytes: [UInt8](repeating: 0, count: 16)); return "volumes[1].typeGUID"
        case 22: m.volumes[1].name = String(repeating: "n", count: 37); return "volumes[1].name"
        case 23: m.volumes[1].size = 0; return "volumes[1].size"
        case 24: m.volumes[1].firstLBA = 33; return "volumes[1].firstLBA"
        case 25: m.volumes[1].firstLBA = 65500; return "volumes[1].firstLBA"
        case 26: m.volumes[1].firstLBA = UInt64.max - 10; return "volumes[1].firstLBA"
        case 27: m.volumes[1].size = UInt64.max - 511; return "volumes[1].firstLBA"
        case 28: m.volumes[1].firstLBA = 18000; return "volumes[1].firstLBA"
        default: return ""
        }
    }

    /// Each broken manifest and the field its error must name.
    @Test(arguments: 0..<29)
    func invalidManifestNamesItsField(index: Int) throws {
        var m = Self.valid()
        let field = Self.breakIt(index, &m)
        // Encoded, then decoded: what a reader of the file sees.
        let e = #expect(throws: BackupSetError.self) { try BackupSetManifest.decode(try m.encode()) }
        #expect(e?.field == field, "case \(index): \(String(describing: e))")
    }

    /// Documents that are not a valid manifest before validation: a typed error naming where.
    @Test(arguments: [
        ("manifest", "not json"),
        ("manifest", "[1, 2]"),
        ("format", "{\"version\": 1}"),
        ("format", "{\"format\": \"other\", \"version\": 1}"),
        ("version", "{\"format\": \"bootlab-volume-set\", \"version\": 2}"),
        ("version", "{\"format\": \"bootlab-volume-set\"}"),
        ("diskGUID", "{\"format\": \"bootlab-volume-set\", \"version\": 1}"),
        ("diskGUID", "{\"format\": \"bootlab-volume-set\", \"version\": 1, \"diskGUID\": \"nope\"}"),
        ("sectorSize", "{\"format\": \"bootlab-volume-set\", \"version\": 1, \"diskGUID\": \"5C4B3A29-1807-4F6E-9D5C-4B3A29180706\", \"sectorSize\": \"512\"}"),
    ])
    func malformedDocument(field: String, text: String) {
        let e = #expect(throws: BackupSetError.self) { try BackupSetManifest.decode(Array(text.utf8)) }
        #expect(e?.field == field, "\(String(describing: e))")
    }

    @Test func oversizedRefusedBeforeDecoding() {
        let big = [UInt8](repeating: 0x20, count: BackupSetManifest.maxFileSize + 1)
        let e = #expect(throws: BackupSetError.self) { try BackupSetManifest.decode(big) }
        #expect(e?.reason.contains("exceed") == true)
    }

    /// 3000 deterministic mutants: each decodes (then it validated) or throws `BackupSetError`.
    @Test func mutantsNeverCrash() throws {
        let base = try Self.valid().encode()
        var rng = Bytes(seed: 1403)
        var decoded = 0, refused = 0
        for i in 0..<3000 {
            var b = base
            let n = 1 + Int(rng.bytes(1)[0] % 4)
            for _ in 0..<n {
                let r = rng.bytes(3)
                let at = (Int(r[0]) << 8 | Int(r[1])) % max(1, b.count)
                switch (i + Int(r[2])) % 3 {
                case 0: b[at] = r[2]
                case 1: b.insert(r[2], at: at)
                default: b.removeSubrange(at..<min(b.count, at + Int(r[2] % 16) + 1))
                }
            }
            do {
                let m = try BackupSetManifest.decode(b)
                try m.validate()
                decoded += 1
            } catch is BackupSetError {
                refused += 1
            }
        }
        #expect(decoded + refused == 3000 && refused > 0)
    }
}
