import ArgumentParser
import Foundation
import Fuzzer

/// `bootlab fuzz --format F [options] -- COMMAND … @@` (docs/fuzzing.md): structure-aware fuzzing
/// of a disk-image reader. Exit 0 no findings, 2 findings, 1 could not fuzz.
struct FuzzCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fuzz",
        abstract: "Fuzz a disk-image reader with structure-aware mutants (checksums recomputed); exit 0 no findings, 2 findings, 1 could not fuzz.",
        discussion: """
            COMMAND runs once per input; @@ in an argument is replaced by the input's path, and without @@ the input \
            arrives on stdin. Crashes (signals), hangs (timeout), sanitizer reports and, with --oracle, disagreements \
            on the bytes are findings; exit codes of clean rejections are not. Findings are deduplicated, minimized and \
            saved under --out with the mutation trace and a one-line repro. The same --seed gives the same mutants.
            """)

    @Option(help: "The format: \(FuzzFormats.names.joined(separator: ", ")).") var format: String
    @Option(help: "A directory of seed files (added to the seeds BootLab renders itself).") var seeds: String?
    @Option(help: "Seeds BootLab renders with its own writers (varied sizes, block/sector sizes, allocation, logs); 0 = only --seeds.") var generatedSeeds = 12
    @Option(help: "Number of runs.") var runs: Int?
    @Option(help: "Time bound: seconds, or 30s, 5m, 1h.") var time: String?
    @Option(help: "Parallel runs.") var jobs = 1
    @Option(help: "Seconds before a run is a hang.") var timeout: Double = 5
    @Option(help: "Findings folder, report.json and junit.xml.") var out: String?
    @Option(help: "Campaign seed: every mutant is a function of it and the run index.") var seed: UInt64 = 1
    @Flag(help: "Baseline: a checksum-unaware byte flipper instead of the structure-aware mutator.") var dumb = false
    @Flag(help: "Structure-aware, but half of the mutants keep one deliberately wrong checksum.") var breakChecksums = false
    @Option(help: "Differential mode: a second reader (e.g. 'qemu-img convert -O raw @@ /dev/stdout'); both exit 0 with different output = finding.") var oracle: String?
    @Flag(help: "COMMAND is instrumented (trace-pc-guard + Sources/Fuzzer/Coverage/guard_counter.c): count edges, keep mutants reaching new ones.") var coverage = false
    @Flag(help: "Fuzz BootLab's own reader for the format in this process (no COMMAND).") var inProcess = false
    @Flag(help: "Do not minimize findings.") var noMinimize = false
    @Option(help: "Runs spent minimizing each finding.") var minimizeBudget = 256
    @Flag(help: "Stop at the first finding.") var stopAtFirstFinding = false
    @Option(help: "Write every mutant into this directory (run-NNNNNNN.EXT).") var saveMutants: String?
    @Flag(help: "Print the result as JSON.") var json = false
    @Flag(help: "No progress lines on stderr.") var quiet = false
    @Argument(parsing: .postTerminator, help: "The command, after --; @@ is the input file.") var command: [String] = []

    func validate() throws {
        if inProcess != command.isEmpty { throw ValidationError(inProcess ? "--in-process takes no COMMAND" : "give the command to fuzz after -- (or --in-process)") }
        if runs == nil, time == nil { throw ValidationError("bound the campaign with --runs N or --time T") }
        if dumb, breakChecksums { throw ValidationError("--dumb and --break-checksums exclude each other") }
        if jobs < 1 { throw ValidationError("--jobs must be at least 1") }
    }

    static func seconds(_ text: String) throws -> Double {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600]
        if let u = text.last, let k = units[u], let v = Double(text.dropLast()) { return v * k }
        guard let v = Double(text) else { throw ValidationError("--time \(text): seconds, or a number with s, m or h") }
        return v
    }

    /// A command line split like a shell would split words (quotes, no expansions).
    static func words(_ text: String) -> [String] {
        var out: [String] = [], cur = "", quote: Character?, any = false
        for ch in text {
            if let q = quote { if ch == q { quote = nil } else { cur.append(ch) }; continue }
            if ch == "'" || ch == "\"" { quote = ch; any = true; continue }
            if ch == " " || ch == "\t" { if any || !cur.isEmpty { out.append(cur) }; cur = ""; any = false; continue }
            cur.append(ch)
        }
        if any || !cur.isEmpty { out.append(cur) }
        return out
    }

    func run() throws {
        do {
            var o = CampaignOptions(format: try FuzzFormats.named(format), target: inProcess ? .inProcess : .command(command))
            o.oracle = oracle.map(Self.words)
            o.seedsDirectory = seeds
            o.generatedSeeds = generatedSeeds
            o.runs = runs
            o.seconds = try time.map(Self.seconds)
            o.jobs = jobs
            o.timeout = timeout
            o.outDirectory = out
            o.seed = seed
            o.mode = dumb ? .dumb : breakChecksums ? .breakChecksums : .structured
            o.coverage = coverage
            o.minimize = !noMinimize
            o.minimizeBudget = minimizeBudget
            o.stopAtFirstFinding = stopAtFirstFinding
            o.saveMutants = saveMutants
            o.progress = !quiet
            let r = try Campaign(o, log: { line in FileHandle.standardError.write(Data((line + "\n").utf8)) }).run()
            print(json ? Reports.json(r) : Reports.summary(r))
            if !r.findings.isEmpty { throw ExitCode(2) }
        } catch let e as FuzzError {
            FileHandle.standardError.write(Data("bootlab fuzz: \(e)\n".utf8))
            throw ExitCode(1)
        }
    }
}
