import ArgumentParser
import BlockCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Lab

/// `bootlab certify TARGET.yaml`: "does my hypervisor target work?" answered as a certificate.
struct CertifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certify",
        abstract: "Run every applicable scenario and validator on a target profile, N boots per cell, and write a certificate (HTML, JSON, JUnit); exit 0 certified, 1 not.",
        discussion: "The target file may live anywhere. Scenarios that list a target with the same hardware profile run as recorded (goldens apply); the others that can say something about the target run as derived cells that must boot. The certificate names what was not covered and why. docs/certifying-a-target.md walks through it."
    )

    @Argument(help: "The target profile (YAML, the format of Scenarios/targets/*.yaml, optionally with boot_runner:).") var targetFile: String
    @OptionGroup var suiteOptions: LabSuiteOptions
    @Option(name: .customLong("scenario"), help: "Only these scenarios (repeatable); the others are listed as not run.") var only: [String] = []
    @Flag(help: "Also the extended tier's scenarios (real distributions; see lab run --extended).") var extended = false
    @Option(help: "Boots per cell: every boot must give the same verdict (flakiness).") var boots: Int = 3
    @Option(help: "Write certificate.html, certificate.json, junit.xml and logs/ here (default: ./certificate-<target>).") var report: String?
    @Option(help: "Golden directory (default: Golden/ beside the scenario directory).") var golden: String?
    @Option(help: "Cells run in parallel.") var jobs: Int = 2
    @Option(help: "Boot timeout in seconds.") var timeout: Double = BootRunner.defaultTimeout
    @Option(name: .customLong("cell-timeout"), help: "Hard bound on one cell in seconds, plus one --timeout per boot beyond the first (0: none).") var cellTimeout: Double = RunOptions.defaultCellTimeout
    @Option(help: "Mutants in the mutation sample run on the target's passing cells (0: none; the certificate then lists it as not covered).") var mutants: Int = 4
    @Option(name: .customLong("mutant-seed"), help: "Which mutants the sample takes (deterministic).") var mutantSeed: UInt64 = 0
    @Flag(name: .customLong("no-mutant-boots"), help: "Leave out mutants only a boot can catch (faster).") var noMutantBoots = false
    @Flag(help: "Keep each cell's work directory.") var keep = false
    @Flag(help: "Print the certificate as JSON on stdout.") var json = false

    func run() throws {
        do {
            guard mutants >= 0 else { throw LabError.argument("--mutants \(mutants)", reason: "must be 0 or more") }
            guard boots >= 1 else { throw LabError.argument("--boots \(boots)", reason: "need at least 1") }
            guard cellTimeout >= 0 else { throw LabError.argument("--cell-timeout \(cellTimeout)", reason: "must be 0 (none) or a number of seconds") }
            let targetURL = URL(fileURLWithPath: targetFile)
            let text: String
            do { text = try String(contentsOf: targetURL, encoding: .utf8) } catch {
                throw LabError.file(path: targetFile, reason: "cannot read it: \(error.localizedDescription)")
            }
            let target = try ScenarioLoader.parseTarget(yaml: text, file: targetFile)
                .resolvingRunner(relativeTo: targetURL.deletingLastPathComponent().path)
            let suite = try suiteOptions.load()
            let out = URL(fileURLWithPath: report ?? "certificate-\(target.name)")
            let work = out.appendingPathComponent("work")
            let plan = try CertifyPlan.make(target: target, suite: suite, only: only, extended: extended, derivedDirectory: work.appendingPathComponent("suite"))
            let goldenDir = golden.map { URL(fileURLWithPath: $0) } ?? suite.directory.deletingLastPathComponent().appendingPathComponent("Golden")
            var options = RunOptions(goldenDirectory: goldenDir, bootTimeout: timeout, workDirectory: work)
            options.cellTimeout = cellTimeout == 0 ? nil : cellTimeout + Double(boots - 1) * timeout
            writeStandardError("bootlab certify \(target.name): \(plan.cells.count) cells (\(plan.cells.filter { $0.kind == .recorded }.count) recorded, \(plan.cells.filter { $0.kind == .derived }.count) derived), \(boots) boot\(boots == 1 ? "" : "s") each, \(plan.notApplicable.count) scenarios not applicable\n")
            let certifier = Certifier(plan: plan, options: options, jobs: jobs, boots: boots)
            let interrupts = InterruptHandler { signal in
                let stopped = certifier.running.stopAll()
                CertifyMutation.stopAll()
                writeStandardError("bootlab certify: interrupted by signal \(signal): stopped \(stopped.cells) running cells and \(stopped.processes) processes\n")
                Glibc.exit(128 + signal)
            }
            defer { interrupts.cancel() }
            let results = certifier.run { done, total, result in
                writeStandardError(TerminalReport.progressLine(done: done, total: total, result: result) + "\n")
            }
            var m = CertifyMutation.Options(count: mutants, workDirectory: work.appendingPathComponent("mutants"))
            m.seed = mutantSeed
            m.boots = !noMutantBoots
            m.jobs = jobs
            m.bootTimeout = timeout
            let mutation = CertifyMutation.sample(plan: plan, results: results, options: m) { writeStandardError($0 + "\n") }
            let certificate = try Certificate.make(plan: plan, targetFile: targetURL, results: results, boots: boots,
                                                   mutation: mutation, tool: "bootlab \(BootLabVersion.string)",
                                                   versions: Certificate.toolVersions())
            let html = try certificate.write(to: out)
            if !keep { try? FileManager.default.removeItem(at: work) }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(certificate), as: UTF8.self))
                writeStandardError(certificate.verdict + "\n")
            } else {
                print(certificate.terminal(), terminator: "")
            }
            writeStandardError("bootlab certify: certificate in \(html.path)\n")
            if !certificate.certified { throw ExitCode(1) }
        } catch let error as ScenarioError {
            writeStandardError("bootlab certify: \(error)\n")
            throw ExitCode(2)
        } catch let error as LabError {
            writeStandardError("bootlab certify: \(error)\n")
            throw ExitCode(2)
        }
    }
}
