import BlockCore
import Foundation
import Testing
@testable import Lab

/// Real generation and real boots under QEMU TCG (no mocks). Needs root (loop mount for
/// extlinux), apt access or a warm kernel cache, and qemu-system-x86_64.
@Suite(.serialized)
struct GeneratorAndBootTests {
    static func temp(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-labtest-\(name)-\(getpid())")
        try? FileManager.default.removeItem(at: url)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    @Test(arguments: ["mbrless-ext4", "mbrless-fat32"])
    func sameSeedSameBytes(_ name: String) throws {
        let suite = try ScenarioParsingTests.suite()
        let scenario = try suite.scenario(named: name)
        let a = try Self.temp("gen-a-\(name)"), b = try Self.temp("gen-b-\(name)")
        defer { try? FileManager.default.removeItem(at: a); try? FileManager.default.removeItem(at: b) }
        let first = try DiskGenerator.generate(scenario.machines[0], of: scenario, suite: suite, machinesDirectory: a)
        let second = try DiskGenerator.generate(scenario.machines[0], of: scenario, suite: suite, machinesDirectory: b)
        #expect(first.diskPath != second.diskPath, "second run must not come from the first one's cache")
        #expect(first.diskDigest == second.diskDigest)
        #expect(first.volumeDigest == second.volumeDigest)
        #expect(try Digest.file(URL(fileURLWithPath: second.diskPath)) == first.diskDigest)
        // Where the cache lives must not matter: a short cache path once let the kernel record the
        // loop mount's path (with a pid) in the ext4 superblock.
        let short = URL(fileURLWithPath: "/tmp/bl-\(getpid() % 1000)")
        try? FileManager.default.removeItem(at: short)
        defer { try? FileManager.default.removeItem(at: short) }
        let third0 = try DiskGenerator.generate(scenario.machines[0], of: scenario, suite: suite, machinesDirectory: short)
        #expect(third0.diskPath.hasPrefix(short.path))
        #expect(third0.diskDigest == first.diskDigest, "a short cache path changed the generated disk")
        // The versions manifest names every input tool and the kernel package.
        #expect(first.versions.packages.keys.contains("e2fsprogs"))
        #expect(first.versions.packages.keys.contains { $0.hasPrefix("linux-image-") })
        let layout = try RawDiskLayout.dump(disk: URL(fileURLWithPath: first.diskPath))
        #expect(layout.contains("start LBA \(scenario.machines[0].partitionStart) "))
        #expect(layout.contains("boot signature 0x55aa"))
        // A different seed gives a different disk.
        var other = scenario
        other.seed += 1
        let third = try DiskGenerator.generate(other.machines[0], of: other, suite: suite, machinesDirectory: a)
        #expect(third.diskDigest != first.diskDigest)
    }

    func runCell(_ scenario: Scenario, _ target: String, suite: LabSuite) throws -> CellResult {
        let work = try Self.temp("cell-\(scenario.name)-\(target)")
        let options = RunOptions(goldenDirectory: ScenarioParsingTests.repo.appendingPathComponent("Golden"), bootTimeout: 120, workDirectory: work)
        var patched = suite
        patched.scenarios = suite.scenarios.map { $0.name == scenario.name ? scenario : $0 }
        return LabRunner(suite: patched, options: options).runCell(Cell(scenario: scenario.name, target: target))
    }

    // A passing boot and a must-not-boot boot failing for its stated reason are the default lab
    // suite's cells `mbrless-ext4/kvm-virtio` (boot to the marker MBRLESS-EXT4-OK, golden) and
    // `foreign-drivers-unreconfigured/kvm-virtio` (must_not_boot: root device not found), which
    // ci/gate runs through the same LabRunner.runCell; the unit tests that booted exactly those
    // two cells again were removed to keep CI in its budget (docs/testing.md, "Duplicates removed").
    // Here only what the suite cannot show: an expectation check that fails.

    /// The expectation check itself can fail: a guest that boots fails a must-not-boot cell.
    @Test func bootingGuestFailsAMustNotBootExpectation() throws {
        let suite = try ScenarioParsingTests.suite()
        var scenario = try suite.scenario(named: "mbrless-fat32")
        scenario.expectations["kvm-virtio"] = .mustNotBoot(reason: "root device not found")
        let result = try runCell(scenario, "kvm-virtio", suite: suite)
        let boot = try #require(result.records.first { $0.name == "boot" })
        #expect(boot.outcome.verdict == .fail)
        #expect(boot.outcome.message.contains("must not boot"))
        #expect(result.verdict == .fail)
    }
}
