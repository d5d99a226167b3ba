import ArgumentParser
import BlockCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Lab

/// `bootlab lab`: the verification lab (scenarios × targets → steps and validators → reports).
struct LabCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lab",
        abstract: "Run the verification lab: generate scenarios, boot them on emulated targets, compare with golden files.",
        subcommands: [LabRun.self, LabList.self, LabShow.self, LabMergeCommand.self, LabMutate.self, LabPairwise.self]
    )
}

struct LabSuiteOptions: ParsableArguments {
    @Option(name: .customLong("scenarios"), help: "Scenario directory (default: $BOOTLAB_SCENARIOS, else the installed or built-in scenarios; docs/installing.md).")
    var directory: String?

    func load() throws -> LabSuite { try LabSuite.load(directory: try locate().url) }

    /// Where the suite is, and whether the user named it (flag or variable) or BootLab found its own.
    func locate() throws -> DataFiles.Location {
        try DataFiles.locate(.scenarios, explicit: directory)
    }
}

struct LabRun: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run scenarios (default: all) on their targets; exit 1 on any regression.")

    @OptionGroup var suiteOptions: LabSuiteOptions
    @Argument(help: "Scenario names (default: every scenario).") var scenarios: [String] = []
    @Option(name: .customLong("target"), help: "Only these targets (repeatable).") var targets: [String] = []
    @Option(help: "Cells run in parallel.") var jobs: Int = 2
    @Option(help: "Run only shard K of N (K/N), split deterministically.") var shard: String?
    @Option(help: "Write report.json, junit.xml, report.html and logs/ here.") var report: String?
    @Option(help: "Golden directory (default: $BOOTLAB_GOLDEN, else Golden/ beside a --scenarios/$BOOTLAB_SCENARIOS directory, else the installed or built-in goldens, read-only when installed).") var golden: String?
    @Flag(name: .customLong("update-golden"), help: "Record golden files instead of comparing.") var updateGolden = false
    @Flag(help: "Keep each cell's work directory.") var keep = false
    @Flag(name: .customLong("fail-on-drift"), help: "Exit 3 when any cell drifted (an external input such as the kernel changed its outputs) and nothing failed.") var failOnDrift = false
    @Option(help: "Boot timeout in seconds.") var timeout: Double = BootRunner.defaultTimeout
    @Option(name: .customLong("cell-timeout"), help: "Hard bound on one cell in seconds (0: none): past it the cell's QEMU, front-ends and tools are killed, its mounts cleaned up, and it fails with \"timeout after N s\".")
    var cellTimeout: Double = RunOptions.defaultCellTimeout
    @Option(name: .customLong("repeat"), help: "Run the selection N times and compare the verdicts: a cell whose verdict differs between runs fails with a 'repeat' record (flakiness); the report is the last run's.")
    var repeatCount: Int = 1
    @Flag(help: "Print the report as JSON on stdout.") var json = false
    @Flag(name: .customLong("independent-only"), help: "Leave out the golden validator: verdicts from independent expectations only (ci/mutants).") var independentOnly = false

    @Flag(help: "Without scenario names: also the extended tier (`tier: extended`: real distributions, docs/testing.md).") var extended = false
    @Flag(help: "Run the pairwise matrix (`bootlab lab pairwise --list`) instead of the scenario files; scenario names then name its rows (pairwise-NN).") var pairwise = false

    func run() throws {
        do {
            guard repeatCount >= 1 else { throw LabError.argument("--repeat \(repeatCount)", reason: "need at least 1") }
            if repeatCount > 1 && updateGolden { throw LabError.argument("--repeat with --update-golden", reason: "record goldens from one run") }
            let located = try suiteOptions.locate()
            var suite = try LabSuite.load(directory: located.url)
            if pairwise { suite.scenarios = try PairwiseMatrix(suite: suite).scenarios }
            let chosen = scenarios.isEmpty ? suite.scenarios.filter { extended || !$0.isExtended } : try scenarios.map { try suite.scenario(named: $0) }
            for t in targets where suite.targets[t] == nil { throw LabError.argument("target '\(t)'", reason: "unknown (known: \(suite.targets.keys.sorted().joined(separator: ", ")))") }
            var cells = Cell.all(chosen, targets: targets)
            let identity = try SuiteIdentity.make(cells: cells, suite: suite)
            let shardValue = try shard.map { try Shard(parsing: $0) }
            if let shardValue { cells = shardValue.select(cells) }
            let goldenDir = try goldenDirectory(suite: located)
            let work = report.map { URL(fileURLWithPath: $0).appendingPathComponent("work") }
                ?? FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-lab-\(getpid())")
            var options = RunOptions(goldenDirectory: goldenDir, updateGolden: updateGolden, bootTimeout: timeout, workDirectory: work)
            guard cellTimeout >= 0 else { throw LabError.argument("--cell-timeout \(cellTimeout)", reason: "must be 0 (none) or a number of seconds") }
            options.cellTimeout = cellTimeout == 0 ? nil : cellTimeout
            writeStandardError("bootlab lab: \(cells.count) cells, \(jobs) jobs\(shardValue.map { ", shard \($0)" } ?? "")\n")
            writeStandardError("bootlab lab: scenarios \(located.path) (\(located.origin)), goldens \(goldenDir.path)\n")
            if independentOnly && updateGolden { throw LabError.argument("--independent-only", reason: "cannot record goldens without the golden validator") }
            let withoutGolden = independentOnly
            let running = RunningCells()
            // Ctrl-C or SIGTERM (a CI timeout): stop QEMU, unmount FUSE, stop servers, leave
            // nothing behind, exit 128+signal.
            let interrupts = InterruptHandler { signal in
                let stopped = running.stopAll()
                if !keep { try? FileManager.default.removeItem(at: work) }
                writeStandardError("bootlab lab: interrupted by signal \(signal): stopped \(stopped.cells) running cells and \(stopped.processes) processes\n")
                Glibc.exit(128 + signal)
            }
            defer { interrupts.cancel() }
            var runs: [[CellResult]] = []
            for i in 1...repeatCount {
                var o = options
                if repeatCount > 1 {
                    o.workDirectory = work.appendingPathComponent("run-\(i)")
                    writeStandardError("bootlab lab: run \(i) of \(repeatCount)\n")
                }
                let runner = LabRunner(suite: suite, options: o, jobs: jobs, pipeline: { s, t in
                    var p = Pipeline.standard(for: s, target: t)
                    if withoutGolden { p.validators.removeAll { $0.name == GoldenValidator.recordName } }
                    return p
                }, progress: { done, total, result in
                    writeStandardError(TerminalReport.progressLine(done: done, total: total, result: result) + "\n")
                })
                running.adopt(runner.running)
                runs.append(runner.run(cells))
            }
            var results = runs.last!
            if repeatCount > 1 {
                let (compared, line) = LabReport.compareRuns(runs)
                results = compared
                writeStandardError(line + "\n")
            }
            var labReport = LabReport(cells: results, shard: shardValue, tool: "bootlab \(BootLabVersion.string)")
            labReport.suite = identity
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(labReport), as: UTF8.self))
                writeStandardError(TerminalReport.summaryLine(labReport) + "\n")
            } else {
                print(TerminalReport.render(labReport), terminator: "")
            }
            if updateGolden {
                // What was recorded (or refused), cell by cell: never a silent rewrite.
                for r in results {
                    guard let g = r.records.first(where: { $0.name == GoldenValidator.recordName }) else { continue }
                    writeStandardError("golden \(r.cell.id): \(g.outcome.message)\n")
                    if let d = g.outcome.details, !d.isEmpty { writeStandardError(d.hasSuffix("\n") ? d : d + "\n") }
                }
            }
            if let report {
                let html = try labReport.write(to: URL(fileURLWithPath: report))
                writeStandardError("bootlab lab: report in \(html.path)\n")
            }
            if !keep { try? FileManager.default.removeItem(at: work) }
            if labReport.hasRegression { throw ExitCode(1) }
            if failOnDrift && labReport.hasDrift { throw ExitCode(3) }
        } catch let error as DataFileError {
            writeStandardError("bootlab lab: \(error)\n")
            throw ExitCode(1)
        } catch let error as ScenarioError {
            writeStandardError("bootlab lab: \(error)\n")
            throw ExitCode(1)
        } catch let error as LabError {
            writeStandardError("bootlab lab: \(error)\n")
            throw ExitCode(1)
        }
    }
}

extension LabRun {
    /// `--golden`, else `$BOOTLAB_GOLDEN`, else `Golden/` beside a suite the user named (their own
    /// suite keeps its own goldens, created by `--update-golden`), else BootLab's own goldens. The
    /// installed goldens are the package's: `--update-golden` never writes under the install
    /// prefix, it asks for a directory of the user's.
    func goldenDirectory(suite: DataFiles.Location) throws -> URL {
        let env = ProcessInfo.processInfo.environment[DataFiles.Item.golden.environmentVariable].flatMap { $0.isEmpty ? nil : $0 }
        if let named = golden ?? env {
            // Recording may create the directory; comparing needs it.
            if updateGolden { return URL(fileURLWithPath: named) }
            return try DataFiles.locate(.golden, explicit: golden).url
        }
        if suite.origin == .flag || suite.origin == .environment {
            return suite.url.deletingLastPathComponent().appendingPathComponent("Golden")
        }
        let found = try DataFiles.locate(.golden)
        if updateGolden && found.origin == .installPrefix {
            throw DataFileError.readOnlyInstallation(
                item: "golden directory", path: found.path,
                reason: "belongs to the installed package; --update-golden does not write there. Record into a directory of yours "
                    + "with --golden DIR or $BOOTLAB_GOLDEN (copy \(found.path) there first to keep the other cells' goldens)")
        }
        return found.url
    }
}

struct LabMergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Combine the reports of `lab run --shard K/N` jobs into one report; exit 2 if a shard is missing, duplicated or from another suite, 1 if a cell failed.")

    @Argument(help: "The shards' report directories (each with report.json and logs/).") var directories: [String]
    @Option(help: "Write the merged report.json, junit.xml, report.html and logs/ here.") var report: String = "lab-report"
    @Flag(name: .customLong("fail-on-drift"), help: "Exit 3 when any cell drifted and nothing failed.") var failOnDrift = false
    @Flag(help: "Print the merged report as JSON on stdout.") var json = false

    func run() throws {
        let merged: LabReport
        do {
            merged = try LabMerge.merge(directories: directories.map { URL(fileURLWithPath: $0) }, tool: "bootlab \(BootLabVersion.string)")
        } catch let e as MergeError {
            writeStandardError("bootlab lab merge: \(e)\n")
            throw ExitCode(2)
        }
        let html = try merged.write(to: URL(fileURLWithPath: report))
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(merged), as: UTF8.self))
        } else {
            print(TerminalReport.render(merged), terminator: "")
        }
        writeStandardError("bootlab lab merge: \(merged.merged?.count ?? 0) shards, \(merged.cells.count) cells; report in \(html.path)\n")
        if merged.hasRegression { throw ExitCode(1) }
        if failOnDrift && merged.hasDrift { throw ExitCode(3) }
    }
}

struct LabList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List scenarios and targets.")
    @OptionGroup var suiteOptions: LabSuiteOptions
    @Flag(help: "JSON output.") var json = false

    func run() throws {
        let suite: LabSuite
        do { suite = try suiteOptions.load() } catch { writeStandardError("bootlab lab: \(error)\n"); throw ExitCode(1) }
        if json {
            struct Listing: Encodable { var scenarios: [Scenario]; var targets: [Target] }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(Listing(scenarios: suite.scenarios, targets: suite.targets.values.sorted { $0.name < $1.name })), as: UTF8.self))
            return
        }
        print("Scenarios:")
        for s in suite.scenarios {
            print("  \(s.name.padding(toLength: 28, withPad: " ", startingAt: 0))\(s.isExtended ? " [extended]" : "") \(s.targets.map { "\($0)(\(s.expectation(for: $0) == .boots ? "boots" : "must-not-boot"))" }.joined(separator: " "))")
        }
        print("Targets:")
        for t in suite.targets.values.sorted(by: { $0.name < $1.name }) {
            print("  \(t.name.padding(toLength: 28, withPad: " ", startingAt: 0)) \(t.nativeFormat), \(t.machine), \(t.controller.kind) (\(t.controller.driver))")
        }
    }
}

/// `bootlab lab pairwise`: the all-pairs matrix of the pipeline's options (docs/testing.md).
struct LabPairwise: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pairwise",
        abstract: "Show the pairwise matrix (backup × reconfigure × front-end × backup kind × target) and check that it covers every pair.",
        discussion: "Run it with `bootlab lab run --pairwise`.")
    @OptionGroup var suiteOptions: LabSuiteOptions
    @Flag(help: "List the rows (the default).") var list = false
    @Flag(help: "Print each row's scenario as YAML-equivalent JSON.") var json = false

    func run() throws {
        do {
            let matrix = try PairwiseMatrix(suite: try suiteOptions.load())
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(matrix.scenarios), as: UTF8.self))
            } else {
                print(matrix.table(), terminator: "")
            }
            let total = AllPairs.allPairs(sizes: matrix.factors.map(\.values.count)).count
            let full = matrix.factors.map(\.values.count).reduce(1, *)
            let missing = matrix.missingPairs()
            writeStandardError("pairwise: \(matrix.scenarios.count) cells (of \(full) combinations) cover \(total - missing.count)/\(total) pairs\n")
            if !missing.isEmpty {
                for m in missing { writeStandardError("  not covered: \(m)\n") }
                throw ExitCode(1)
            }
        } catch let error as ScenarioError {
            writeStandardError("bootlab lab pairwise: \(error)\n")
            throw ExitCode(1)
        } catch let error as LabError {
            writeStandardError("bootlab lab pairwise: \(error)\n")
            throw ExitCode(1)
        }
    }
}

struct LabShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one scenario as the runner understands it.")
    @OptionGroup var suiteOptions: LabSuiteOptions
    @Argument(help: "Scenario name.") var scenario: String
    @Flag(help: "JSON output.") var json = false

    func run() throws {
        do {
            let suite = try suiteOptions.load()
            let s = try suite.scenario(named: scenario)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(s), as: UTF8.self))
                return
            }
            print("\(s.name): \(s.summary)")
            print("  file: \(s.file), seed: \(s.seed)")
            for m in s.machines {
                print("  machine \(m.name): \(m.kernel.rawValue) kernel, \(m.filesystem.rawValue) + \(m.bootloader.rawValue), volume \(ByteSize.format(m.volumeSize)) at LBA \(m.partitionStart), disk \(ByteSize.format(m.diskSize)), marker \(m.marker)")
                print("    initramfs modules: \(suite.initramfsModules(for: m, in: s).joined(separator: " "))")
            }
            let b = s.backup
            print("  backup: \(b.kind.rawValue), block \(ByteSize.format(b.blockSize)), compression \(b.compression.rawValue), encryption \(b.encryption.rawValue), \(b.incrementals.count) incrementals\(b.vault.map { ", vault \($0)" } ?? "")")
            for t in s.targets {
                let p = Pipeline.standard(for: s, target: suite.targets[t]!)
                print("  \(t): \(s.expectation(for: t).summary); steps: \(p.steps.map(\.name).joined(separator: " → ")); validators: \(p.validators.map(\.name).joined(separator: ", "))")
            }
        } catch let error as DataFileError {
            writeStandardError("bootlab lab: \(error)\n"); throw ExitCode(1)
        } catch let error as ScenarioError {
            writeStandardError("bootlab lab: \(error)\n"); throw ExitCode(1)
        } catch let error as LabError {
            writeStandardError("bootlab lab: \(error)\n"); throw ExitCode(1)
        }
    }
}

/// SIGINT and SIGTERM delivered to a handler on its own queue instead of killing the process, so
/// the lab can stop what it started first.
final class InterruptHandler {
    private let sources: [any DispatchSourceSignal]

    init(_ handler: @escaping @Sendable (Int32) -> Void) {
        sources = [SIGINT, SIGTERM].map { sig in
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { handler(sig) }
            s.resume()
            return s
        }
    }

    func cancel() {
        for s in sources { s.cancel() }
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}
