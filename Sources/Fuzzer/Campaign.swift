import Foundation

/// Everything a campaign needs; `bootlab fuzz` fills it from its command line.
public struct CampaignOptions: Sendable {
    public var format: any FuzzFormat
    public var target: TargetSpec
    public var oracle: [String]?
    public var seedsDirectory: String?
    /// Seeds BootLab renders itself (besides `--seeds`); 0 = only the given ones.
    public var generatedSeeds = 12
    public var runs: Int?
    public var seconds: Double?
    public var jobs = 1
    public var timeout: Double = 5
    public var outDirectory: String?
    public var seed: UInt64 = 1
    public var mode: MutationMode = .structured
    /// Set BOOTLAB_COV_FILE for the program (an instrumented build, docs/fuzzing.md) and keep
    /// mutants that reach new edges.
    public var coverage = false
    public var minimize = true
    public var minimizeBudget = 256
    /// Stop at the first finding (the buggy-parser comparison counts runs until then).
    public var stopAtFirstFinding = false
    /// Write every mutant here as run-NNNNNNN.EXT (reproducibility checks, corpus measurements).
    public var saveMutants: String?
    public var progress = false

    public init(format: any FuzzFormat, target: TargetSpec) { self.format = format; self.target = target }
}

/// One deduplicated finding.
public struct Finding: Sendable, Codable {
    public var verdict: Verdict
    public var signature: String
    public var run: Int
    public var outcome: String
    public var parent: String
    public var trace: [String]
    public var originalSize: Int
    public var minimizedSize: Int
    /// Non-zero bytes left after minimization (a format with a trailer keeps its length).
    public var minimizedNonZeroBytes: Int
    public var minimizationRuns: Int
    public var directory: String?
    public var repro: String
    public var stderrTail: String
    public var duplicates: Int
}

/// The campaign's numbers, printed, written as report.json and as JUnit.
public struct CampaignResult: Sendable, Codable {
    public var format: String
    public var mode: MutationMode
    public var seed: UInt64
    public var runs: Int
    public var seconds: Double
    public var execsPerSecond: Double
    public var seeds: Int
    public var corpus: Int
    /// Edges reached by the instrumented program over all runs (nil without --coverage).
    public var edges: Int?
    public var mutationKinds: [String: Int]
    public var outcomes: [String: Int]
    public var findings: [Finding]
    /// Run index of the first finding (1-based count of runs until it), nil when none.
    public var firstFindingAfterRuns: Int?
}

public final class Campaign: @unchecked Sendable {
    struct Entry {
        var name: String; var bytes: [UInt8]; var extra: [Field]; var map: StructureMap?
        init(name: String, bytes: [UInt8], extra: [Field], format: any FuzzFormat, mode: MutationMode) {
            self.name = name; self.bytes = bytes; self.extra = extra
            map = mode == .dumb ? nil : format.map(bytes)
        }
    }

    let o: CampaignOptions
    var corpus: [Entry] = []
    var edges: [UInt8] = []
    var edgeCount = 0
    var kinds: [String: Int] = [:]
    var outcomes: [String: Int] = [:]
    var findings: [String: Finding] = [:]
    var findingOrder: [String] = []
    var firstFinding: Int?
    let work: String
    var executors: [Executor] = []
    let log: @Sendable (String) -> Void

    public init(_ options: CampaignOptions, log: @escaping @Sendable (String) -> Void = { _ in }) throws(FuzzError) {
        o = options
        self.log = log
        if case .command(let argv) = o.target, argv.isEmpty { throw .usage("no command to fuzz (give it after --)") }
        if let oracle = o.oracle, oracle.isEmpty { throw .usage("--oracle is empty") }
        work = FileSystem.temporaryDirectory(prefix: "bootlab-fuzz")
        for j in 0..<max(1, o.jobs) {
            executors.append(try Executor(target: o.target, oracle: o.oracle, timeout: o.timeout, format: o.format,
                                          collectCoverage: o.coverage, directory: "\(work)/job-\(j)"))
        }
        if let out = o.outDirectory { try FileSystem.makeDirectory(out + "/findings") }
        if let s = o.saveMutants { try FileSystem.makeDirectory(s) }
    }

    deinit { FileSystem.removeTree(work) }

    /// The starting corpus: `--seeds DIR` files (sorted by name) then rendered seeds.
    public static func seeds(_ o: CampaignOptions) throws(FuzzError) -> [Seed] {
        var out: [Seed] = []
        if let dir = o.seedsDirectory {
            for p in try FileSystem.list(dir) where FileSystem.isRegularFile(p) {
                out.append(Seed(name: (p as NSString).lastPathComponent, bytes: try FileSystem.read(p)))
            }
        }
        if o.generatedSeeds > 0 {
            var r = FuzzRandom(seed: o.seed, stream: UInt64.max)
            out += try o.format.seeds(count: o.generatedSeeds, random: &r)
        }
        guard !out.isEmpty else { throw .seed("no seeds (empty --seeds directory and --generated-seeds 0)") }
        return out
    }

    public func run() throws(FuzzError) -> CampaignResult {
        let seeds = try Self.seeds(o)
        for s in seeds {
            var extra: [Field] = []
            if let d = o.format as? DriverFuzzFormat {
                let p = "\(work)/seed.\(d.fileExtension)"
                try FileSystem.write(s.bytes, to: p)
                extra = d.sites(path: p)
            }
            corpus.append(Entry(name: s.name, bytes: s.bytes, extra: extra, format: o.format, mode: o.mode))
        }
        if case .inProcess = o.target {
            InProcess.prepare(note: "bootlab fuzz: BootLab's \(o.format.name) reader died in-process; the input is \(work)/job-*/input.\(o.format.fileExtension) (kept: the fuzzer did not get to clean up); rerun it with bootlab check", timeout: o.timeout)
        }
        // Seeds run first (their coverage is the baseline both modes share).
        for s in corpus { let e = try executors[0].run(s.bytes); _ = absorb(e.coverage) }
        let start = Date()
        var lastProgress = start
        var runsDone = 0
        let batch = max(1, o.jobs) * 4
        loop: while true {
            if let r = o.runs, runsDone >= r { break }
            if let t = o.seconds, Date().timeIntervalSince(start) >= t { break }
            let n = min(batch, (o.runs ?? Int.max) - runsDone)
            let mutants: [(Mutant, String)] = (0..<n).map { k in
                let index = runsDone + k
                // A parent serves 16 consecutive runs (inputs of one length: the executor then
                // rewrites only the pieces that changed), chosen from the corpus as it was then.
                var pr = FuzzRandom(seed: o.seed, stream: 1 << 62 | UInt64(index / 16))
                let parent = corpus[pr.below(corpus.count)]
                var r = FuzzRandom(seed: o.seed, stream: UInt64(index))
                return (Mutator.mutate(parent.bytes, format: o.format, extraFields: parent.extra, parentMap: parent.map, mode: o.mode, random: &r),
                        parent.name)
            }
            if let dir = o.saveMutants {
                for (k, m) in mutants.enumerated() {
                    try FileSystem.write(m.0.bytes, to: String(format: "%@/run-%07d.%@", dir, runsDone + k, o.format.fileExtension))
                }
            }
            var results = [Result<Execution, FuzzError>?](repeating: nil, count: n)
            let jobs = min(executors.count, n)
            results.withUnsafeMutableBufferPointer { res in
                nonisolated(unsafe) let res = res
                DispatchQueue.concurrentPerform(iterations: jobs) { w in
                    for k in stride(from: w, to: n, by: jobs) {
                        do throws(FuzzError) { res[k] = .success(try executors[w].run(mutants[k].0.bytes)) }
                        catch { res[k] = .failure(error) }
                    }
                }
            }
            for k in 0..<n {
                let index = runsDone + k
                let e: Execution
                switch results[k]! {
                case .success(let x): e = x
                case .failure(let err): throw err
                }
                let (m, parent) = mutants[k]
                for kind in m.kinds { kinds[kind.rawValue, default: 0] += 1 }
                outcomes[e.verdict == .pass ? e.outcome.components(separatedBy: ":").first ?? e.outcome : e.verdict.rawValue, default: 0] += 1
                if absorb(e.coverage) {
                    corpus.append(Entry(name: "run-\(index)", bytes: m.bytes, extra: corpus.first { $0.name == parent }?.extra ?? [],
                                        format: o.format, mode: o.mode))
                }
                if e.verdict.isFinding {
                    try record(e, mutant: m, parent: parent, run: index)
                    if o.stopAtFirstFinding { runsDone = index + 1; break loop }
                }
            }
            runsDone += n
            if o.progress, Date().timeIntervalSince(lastProgress) >= 2 {
                lastProgress = Date()
                let secs = lastProgress.timeIntervalSince(start)
                log(String(format: "[fuzz %@] runs %d (%.0f/s)%@ corpus %d findings %d | %@", o.format.name, runsDone, Double(runsDone) / secs,
                           o.coverage ? " edges \(edgeCount)" : "", corpus.count, findings.count,
                           kinds.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")))
            }
        }
        let secs = max(Date().timeIntervalSince(start), 1e-6)
        let result = CampaignResult(format: o.format.name, mode: o.mode, seed: o.seed, runs: runsDone, seconds: secs,
                                    execsPerSecond: Double(runsDone) / secs, seeds: seeds.count, corpus: corpus.count,
                                    edges: o.coverage ? edgeCount : nil, mutationKinds: kinds, outcomes: outcomes,
                                    findings: findingOrder.map { findings[$0]! }, firstFindingAfterRuns: firstFinding)
        if let out = o.outDirectory {
            try Reports.writeJSON(result, to: out + "/report.json")
            try FileSystem.write(Reports.junit(result), to: out + "/junit.xml")
        }
        return result
    }

    /// ORs a coverage map into the campaign's; true when it reached a new edge.
    func absorb(_ cov: [UInt8]?) -> Bool {
        guard let cov, !cov.isEmpty else { return false }
        if edges.count < cov.count { edges += [UInt8](repeating: 0, count: cov.count - edges.count) }
        var new = false
        for i in 0..<cov.count where cov[i] != 0 && edges[i] == 0 { edges[i] = 1; edgeCount += 1; new = true }
        return new
    }

    func record(_ e: Execution, mutant m: Mutant, parent: String, run: Int) throws(FuzzError) {
        if firstFinding == nil { firstFinding = run + 1 }
        if var f = findings[e.signature] { f.duplicates += 1; findings[e.signature] = f; return }
        var minimized = m.bytes, minRuns = 0
        if o.minimize {
            (minimized, minRuns) = try Minimizer.minimize(m.bytes, format: o.format, mode: o.mode, budget: o.minimizeBudget) { (b: [UInt8]) throws(FuzzError) -> Bool in
                let x = try executors[0].run(b)
                return x.verdict == e.verdict && Self.sameCause(x.signature, e.signature)
            }
        }
        var dir: String?
        var repro = ""
        if let out = o.outDirectory {
            let d = "\(out)/findings/\(e.verdict.rawValue)-\(String(format: "%08x", Reports.hash(e.signature)))"
            try FileSystem.makeDirectory(d)
            let input = "\(d)/input.\(o.format.fileExtension)"
            try FileSystem.write(minimized, to: input)
            try FileSystem.write(m.bytes, to: "\(d)/original.\(o.format.fileExtension)")
            repro = Reports.repro(target: o.target, format: o.format.name, input: input)
            try FileSystem.write("#!/bin/sh\n# \(e.verdict.rawValue): \(e.signature)\n\(repro)\n", to: "\(d)/repro.sh")
            dir = d
        }
        let f = Finding(verdict: e.verdict, signature: e.signature, run: run, outcome: e.outcome, parent: parent, trace: m.trace,
                        originalSize: m.bytes.count, minimizedSize: minimized.count,
                        minimizedNonZeroBytes: minimized.reduce(0) { $0 + ($1 == 0 ? 0 : 1) }, minimizationRuns: minRuns, directory: dir,
                        repro: repro, stderrTail: e.stderrTail, duplicates: 0)
        if let dir { try Reports.writeJSON(f, to: "\(dir)/finding.json") }
        findings[e.signature] = f
        findingOrder.append(e.signature)
        log("[fuzz \(o.format.name)] finding after \(run + 1) runs: \(e.verdict.rawValue) \(e.signature) (minimized \(m.bytes.count) -> \(minimized.count) bytes, \(minimized.reduce(0) { $0 + ($1 == 0 ? 0 : 1) }) non-zero, in \(minRuns) runs)")
    }

    /// Minimization keeps the verdict's cause: the same signal/sanitizer line; frames may move.
    static func sameCause(_ a: String, _ b: String) -> Bool {
        a.split(separator: ":").first == b.split(separator: ":").first
    }
}
