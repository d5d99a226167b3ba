import Foundation
import Testing
import TestSupport
@testable import Fuzzer

/// Verdicts from real processes: exit codes are not findings; signals, timeouts and sanitizer
/// lines are; findings are deduplicated, minimized and saved with a repro; reports are written.
struct CampaignTests {
    func options(_ argv: [String], format: String = "mbr", runs: Int = 40) throws -> CampaignOptions {
        var o = CampaignOptions(format: try FuzzFormats.named(format), target: .command(argv))
        o.runs = runs
        o.generatedSeeds = 4
        o.timeout = 5
        o.minimizeBudget = 16
        return o
    }

    @Test func exitCodesAreNotFindings() throws {
        let r = try Campaign(try options(["sh", "-c", "exit $(( $(wc -c < \"$1\") % 3 ))", "sh", "@@"])).run()
        #expect(r.runs == 40)
        #expect(r.findings.isEmpty)
        #expect(r.outcomes.keys.contains { $0.hasPrefix("exit") })
    }

    @Test func stdinModeWithoutPlaceholder() throws {
        let r = try Campaign(try options(["sh", "-c", "cat > /dev/null"], runs: 10)).run()
        #expect(r.runs == 10 && r.findings.isEmpty)
    }

    @Test func crashesAreDeduplicatedMinimizedAndSaved() throws {
        let scratch = Scratch("fuzz-crash")
        var o = try options(["sh", "-c", "kill -SEGV $$", "sh", "@@"], runs: 12)
        o.outDirectory = scratch.path
        let r = try Campaign(o).run()
        #expect(r.findings.count == 1)
        let f = try #require(r.findings.first)
        #expect(f.verdict == .crash && f.signature.hasPrefix("signal 11"))
        #expect(f.duplicates == 11)
        #expect(f.minimizedSize <= f.originalSize)
        #expect(f.minimizedSize <= 512, "any input crashes: the minimizer cuts it down")
        #expect(f.repro.contains("findings/crash-") && f.repro.hasPrefix("sh -c"))
        let dir = try #require(f.directory)
        #expect(FileManager.default.fileExists(atPath: dir + "/finding.json"))
        #expect(FileManager.default.fileExists(atPath: dir + "/repro.sh"))
        let junit = try String(contentsOfFile: scratch.file("junit.xml"), encoding: .utf8)
        #expect(junit.contains("failures=\"1\"") && junit.contains("<failure"))
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: scratch.file("report.json")))) as? [String: Any]
        #expect(json?["runs"] as? Int == 12)
        #expect(r.firstFindingAfterRuns == 1)
    }

    @Test func hangsAreTimeouts() throws {
        var o = try options(["sleep", "5"], runs: 2)
        o.timeout = 0.3
        o.minimize = false
        let r = try Campaign(o).run()
        #expect(r.findings.map(\.verdict) == [.hang])
    }

    @Test func sanitizerReportsAreFindingsEvenWithACleanExit() throws {
        var o = try options(["sh", "-c", "echo '==1==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x1' >&2; echo '    #0 0x4 in parse_table x.c:3' >&2; exit 1"], runs: 3)
        o.minimize = false
        let r = try Campaign(o).run()
        #expect(r.findings.count == 1)
        #expect(r.findings.first?.verdict == .sanitizer)
        #expect(r.findings.first?.signature.contains("parse_table") == true)
    }

    @Test func differentialModeComparesOutputs() throws {
        var o = try options(["sh", "-c", "head -c 100 \"$1\"", "sh", "@@"], runs: 4)
        o.oracle = ["sh", "-c", "head -c 99 \"$1\"", "sh", "@@"]
        o.minimize = false
        let r = try Campaign(o).run()
        #expect(r.findings.first?.verdict == .differential)
        var same = try options(["sh", "-c", "head -c 100 \"$1\"", "sh", "@@"], runs: 4)
        same.oracle = ["head", "-c", "100", "@@"]
        #expect(try Campaign(same).run().findings.isEmpty)
    }

    @Test func sameSeedSameMutantsWithParallelJobs() throws {
        let scratch = Scratch("fuzz-repro")
        func mutants(_ jobs: Int, _ dir: String) throws -> [Data] {
            var o = try options(["true", "@@"], format: "gpt", runs: 24)
            o.jobs = jobs
            o.saveMutants = scratch.dir(dir)
            _ = try Campaign(o).run()
            return try FileManager.default.contentsOfDirectory(atPath: o.saveMutants!).sorted()
                .map { try Data(contentsOf: URL(fileURLWithPath: o.saveMutants! + "/" + $0)) }
        }
        let a = try mutants(1, "a"), b = try mutants(2, "b")
        #expect(a.count == 24 && a == b)
    }

    @Test func inProcessReadersRejectCleanly() throws {
        var o = CampaignOptions(format: try FuzzFormats.named("gpt"), target: .inProcess)
        o.runs = 60
        o.generatedSeeds = 4
        let r = try Campaign(o).run()
        #expect(r.runs == 60 && r.findings.isEmpty)
        #expect(r.outcomes["rejected", default: 0] > 0)
    }

    @Test func inputFileAlwaysHoldsTheMutant() throws {
        let scratch = Scratch("fuzz-store")
        let e = try Executor(target: .command(["true", "@@"]), oracle: nil, timeout: 5, format: try FuzzFormats.named("mbr"),
                             collectCoverage: false, directory: scratch.dir("job"))
        var g = FuzzRandom(seed: 8)
        var base = g.bytes(300_000)
        for step in 0..<12 {
            var b = base
            switch step % 4 {
            case 0: b[g.below(b.count)] ^= 0xff
            case 1: b.removeSubrange(g.below(b.count)...)
            case 2: b += g.bytes(70_000)
            default: base = g.bytes(200_000 + g.below(200_000)); b = base
            }
            _ = try e.run(b)
            let onDisk = [UInt8](try Data(contentsOf: URL(fileURLWithPath: e.inputPath)))
            let same = onDisk == b
            #expect(same, "step \(step)")
        }
    }

    @Test func placeholderSubstitution() {
        #expect(Executor.substitute(["qemu-img", "info", "@@"], path: "/x") == ["qemu-img", "info", "/x"])
        #expect(Executor.substitute(["tool", "file=@@,ro"], path: "/x") == ["tool", "file=/x,ro"])
        #expect(Executor.substitute(["cat"], path: "/x") == nil)
    }
}
