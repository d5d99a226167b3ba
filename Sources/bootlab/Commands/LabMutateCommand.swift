import ArgumentParser
import BlockCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Lab

/// `bootlab lab mutate`: the suite against a catalog of deliberate faults (docs/mutation-testing.md).
struct LabMutate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mutate",
        abstract: "Run the suite's cells against the mutation catalog; print the mutation score; exit 1 on any survivor.")

    @OptionGroup var suiteOptions: LabSuiteOptions
    @Option(name: .customLong("target"), help: "Only cells of these targets (repeatable).") var targets: [String] = []
    @Option(help: "Run N mutants chosen deterministically by --seed (default: the whole catalog).") var sample: Int?
    @Option(help: "Seed of --sample.") var seed: UInt64 = 0
    @Flag(name: .customLong("no-boot"), help: "Leave out mutants only a boot can catch; run the others without booting.") var noBoot = false
    @Flag(name: .customLong("no-control"), help: "Skip the control runs (each mutated cell without its fault).") var noControl = false
    @Flag(name: .customLong("all-validators"), help: "Run every validator on each mutant and list every one that fails (no stop at the first catch; combine with --no-boot).") var allValidators = false
    @Flag(name: .customLong("list"), help: "List the mutants the run would run, and exit.") var list = false
    @Option(help: "Mutants run in parallel.") var jobs: Int = 2
    @Option(help: "Boot timeout in seconds.") var timeout: Double = BootRunner.defaultTimeout
    @Option(help: "Write mutation.json and mutation.md here.") var report: String?
    @Flag(help: "Print the report as JSON on stdout.") var json = false

    func run() throws {
        let suite: LabSuite
        do {
            suite = try suiteOptions.load()
            for t in targets where suite.targets[t] == nil { throw LabError.argument("target '\(t)'", reason: "unknown (known: \(suite.targets.keys.sorted().joined(separator: ", ")))") }
        } catch {
            writeStandardError("bootlab lab mutate: \(error)\n")
            throw ExitCode(1)
        }
        if let sample, sample < 1 { throw ValidationError("--sample takes N ≥ 1") }
        let cells = Cell.all(suite.scenarios, targets: targets)
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-mutate-\(getpid())")
        var o = MutationOptions(workDirectory: work)
        o.sample = sample
        o.seed = seed
        o.boots = !noBoot
        o.control = !noControl
        o.jobs = jobs
        o.stopAtFirstCatch = !allValidators
        o.bootTimeout = timeout
        let run = MutationRun(suite: suite, options: o, progress: { done, total, r in
            writeStandardError(String(format: "[%d/%d] %@ %@ on %@: %@ (%.1f s)\n", done, total, r.status.rawValue.uppercased(), r.mutant.id, r.mutant.cell.id,
                                      r.caughtBy.map { "caught by \($0)" } ?? r.message.prefix(200).description, r.seconds))
        })
        let plan = run.plan(cells: cells)
        if list {
            for m in plan.mutants { print("\(m.id.padding(toLength: 40, withPad: " ", startingAt: 0)) \(m.cell.id.padding(toLength: 38, withPad: " ", startingAt: 0)) \(m.fault)\(m.needsBoot ? "  (boot)" : "")") }
            print("\(plan.mutants.count) of \(plan.catalogSize) catalog mutants" + (plan.uncovered.isEmpty ? "" : "; no cell for: \(plan.uncovered.joined(separator: ", "))"))
            return
        }
        writeStandardError("bootlab lab mutate: \(plan.mutants.count) of \(plan.catalogSize) mutants\(sample.map { " (sample \($0), seed \(seed))" } ?? "")\(noBoot ? ", no boots" : ""), \(jobs) jobs; validators in cost order, \(allValidators ? "every validator runs" : "each mutant stops at its first catch")\n")
        let interrupts = InterruptHandler { signal in
            let stopped = run.stopAll()
            try? FileManager.default.removeItem(at: work)
            writeStandardError("bootlab lab mutate: interrupted by signal \(signal): stopped \(stopped.cells) running cells and \(stopped.processes) processes\n")
            Glibc.exit(128 + signal)
        }
        defer { interrupts.cancel() }
        let result = run.run(cells: cells)
        try? FileManager.default.removeItem(at: work)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
        } else {
            print(result.markdownTable, terminator: "")
            for c in result.controls {
                print("control \(c.cell.id) (no fault): " + c.validators.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.rawValue)" }.joined(separator: " "))
            }
            if !result.uncovered.isEmpty { print("catalog entries with no cell in this run: \(result.uncovered.joined(separator: ", "))") }
            for f in result.failures { print("NOT CAUGHT \(f.mutant.id) on \(f.mutant.cell.id) [\(f.status.rawValue)]: \(f.message)") }
            print(String(format: "total time %.0f s", result.seconds))
        }
        writeStandardError(result.scoreLine + "\n")
        if let report {
            try result.write(to: URL(fileURLWithPath: report))
            writeStandardError("bootlab lab mutate: report in \(report)/mutation.json, mutation.md\n")
        }
        if !result.passed { throw ExitCode(1) }
    }
}
