import Foundation

/// The answer to "does my target work?": what `bootlab certify TARGET.yaml` writes as
/// `certificate.json` (this type), `certificate.html` and `junit.xml`.
public struct Certificate: Sendable, Codable {
    public struct Profile: Sendable, Codable {
        public var name: String
        public var file: String
        /// SHA-256 of the target file's bytes.
        public var digest: String
        public var description: String
        public var nativeFormat: String
        public var machine: String
        public var firmware: String
        public var controller: String
        public var modules: [String]
        public var requiresKernel: String?
        /// "qemu-system-x86_64 (built-in)" or the custom runner's template.
        public var bootRunner: String
        /// True when the suite records this very profile (its recorded cells use the goldens).
        public var recordedInSuite: Bool
    }

    public struct CertifiedCell: Sendable, Codable {
        public var cell: Cell
        public var kind: CertifyPlan.Kind
        public var verdict: Verdict
        public var expectation: String
        public var seconds: Double
        /// Per boot validator (`boot`, `boot:<machine>`): each boot's verdict.
        public var boots: [String: [Verdict]]
        public var flaky: Bool
        public var records: [StepRecord]
    }

    /// Why the certificate fails, one line per failed check, with the console's last lines for a
    /// failed boot.
    public struct Failure: Sendable, Codable {
        public var cell: String
        public var check: String
        public var message: String
        public var consoleExcerpt: String?
    }

    /// The mutation sample's score on this target (issue 15 part A's catalog).
    public struct Mutation: Sendable, Codable {
        public var ran: Bool
        public var caught: Int
        public var total: Int
        public var survivors: [String]
        public var note: String
        public var score: Double? { total == 0 ? nil : Double(caught) / Double(total) }
    }

    public var tool: String
    public var target: Profile
    public var certified: Bool
    public var verdict: String
    public var bootsPerCell: Int
    /// Debian package → version, plus `qemu-system-x86_64`'s own version line.
    public var versions: [String: String]
    public var cells: [CertifiedCell]
    public var failures: [Failure]
    public var notApplicable: [CertifyPlan.Exclusion]
    public var notCovered: [CertifyPlan.Exclusion]
    public var adaptations: [String]
    public var mutation: Mutation
    public var summary: [String: Int]

    /// Exit status of `bootlab certify`: 0 certified, 1 not.
    public var exitStatus: Int32 { certified ? 0 : 1 }
}

extension Certificate {
    /// Builds the certificate from the plan and the cells' results.
    public static func make(plan: CertifyPlan, targetFile: URL, results: [(CertifyPlan.Kind, CellResult)], boots: Int,
                            mutation: Mutation, tool: String, versions: [String: String]) throws -> Certificate {
        let t = plan.target
        let profile = Profile(name: t.name, file: targetFile.path, digest: try Digest.file(targetFile), description: t.summary,
                              nativeFormat: t.nativeFormat, machine: t.machine, firmware: t.firmware,
                              controller: "\(t.controller.kind) (\(t.controller.driver))", modules: t.modules,
                              requiresKernel: t.requiresKernel?.rawValue,
                              bootRunner: t.bootRunner?.summary ?? "qemu-system-x86_64 -accel tcg (built-in)",
                              recordedInSuite: plan.cells.contains { $0.kind == .recorded })
        var cells: [CertifiedCell] = []
        var failures: [Failure] = []
        var notCovered: [CertifyPlan.Exclusion] = []
        for (kind, r) in results {
            var bootVerdicts: [String: [Verdict]] = [:]
            for rec in r.records { if let v = RepeatedBootValidator.verdicts(in: rec) { bootVerdicts[rec.name] = v } }
            let flaky = bootVerdicts.values.contains { Set($0).count > 1 }
            cells.append(CertifiedCell(cell: r.cell, kind: kind, verdict: r.verdict, expectation: r.expectation, seconds: r.seconds,
                                       boots: bootVerdicts, flaky: flaky, records: r.records))
            for rec in r.records {
                switch rec.outcome.verdict {
                case .fail:
                    failures.append(Failure(cell: r.cell.id, check: rec.name, message: rec.outcome.message,
                                            consoleExcerpt: consoleExcerpt(rec.outcome.attachments)))
                case .skip:
                    notCovered.append(.init(what: "\(r.cell.id): \(rec.name)", reason: rec.outcome.message))
                case .pass, .drift:
                    break
                }
            }
            if kind == .derived {
                notCovered.append(.init(what: "\(r.cell.id): golden", reason: "derived cell: no golden files are recorded for this profile on this scenario (the other validators judge the bytes; recording them is `bootlab lab run --update-golden` once the target joins Scenarios/targets)"))
            }
        }
        if !mutation.ran { notCovered.append(.init(what: "mutation sample", reason: mutation.note)) }
        var summary: [String: Int] = [:]
        for v in Verdict.allCases { summary[v.rawValue] = cells.filter { $0.verdict == v }.count }
        summary["flaky"] = cells.filter(\.flaky).count
        summary["not-applicable"] = plan.notApplicable.count

        let failed = cells.filter { $0.verdict == .fail }
        let passed = cells.filter { $0.verdict == .pass || $0.verdict == .drift }
        // Survivors, errors and invalid catches alike: the sample must be caught whole.
        let survivors = mutation.ran && !mutation.survivors.isEmpty
        let certified = failed.isEmpty && !passed.isEmpty && !survivors
        var verdict: String
        if certified {
            verdict = "CERTIFIED: \(passed.count) cell\(passed.count == 1 ? "" : "s") passed every validator, \(boots) boot\(boots == 1 ? "" : "s") each, all agreeing"
                + (mutation.ran ? "; mutation sample \(mutation.caught)/\(mutation.total) caught" : "")
        } else if !failed.isEmpty {
            let first = failures.first.map { " — first: \($0.cell) \($0.check): \($0.message)" } ?? ""
            verdict = "NOT CERTIFIED: \(failed.count) of \(cells.count) cells failed\(first)"
        } else if survivors {
            verdict = "NOT CERTIFIED: \(mutation.survivors.count) of \(mutation.total) mutants not caught: \(mutation.survivors.joined(separator: "; "))"
        } else {
            verdict = "NOT CERTIFIED: no applicable scenario passed (nothing was tested)"
        }
        return Certificate(tool: tool, target: profile, certified: certified, verdict: verdict, bootsPerCell: boots, versions: versions,
                           cells: cells, failures: failures, notApplicable: plan.notApplicable, notCovered: notCovered,
                           adaptations: plan.adaptations, mutation: mutation, summary: summary)
    }

    /// The console's last meaningful lines (ANSI stripped): what a reader needs to see why a boot
    /// failed without opening the log.
    static func consoleExcerpt(_ attachments: [String: String]) -> String? {
        guard let path = attachments["console"] ?? attachments.keys.sorted().filter({ $0.hasPrefix("console") }).last.flatMap({ attachments[$0] }),
              let data = FileManager.default.contents(atPath: path) else { return nil }
        let text = HTMLReport.stripANSI(String(decoding: data, as: UTF8.self))
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return lines.suffix(12).joined(separator: "\n")
    }

    /// Debian package versions of everything a certificate's verdict depends on, and QEMU's own
    /// version line. Packages that are not installed say so.
    public static func toolVersions() -> [String: String] {
        let packages = ["qemu-system-x86", "qemu-utils", "seabios", "ovmf", "nbdkit", "fuse3", "libguestfs0", "libvhdi-utils",
                        "libvmdk-utils", "libqcow-utils", "busybox-static", "e2fsprogs", "dosfstools", "mtools", "syslinux", "extlinux"]
        var out: [String: String] = [:]
        for p in packages {
            let r = try? Shell.run("dpkg-query", ["-W", "-f=${Version}", p], check: false)
            out[p] = (r?.status == 0 && !(r?.stdout.isEmpty ?? true)) ? r!.stdout : "not installed"
        }
        if let q = try? Shell.run("qemu-system-x86_64", ["--version"], check: false), q.status == 0 {
            out["qemu-system-x86_64 --version"] = q.stdout.split(separator: "\n").first.map(String.init) ?? ""
        }
        return out
    }
}
