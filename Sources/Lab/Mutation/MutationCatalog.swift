import Exposure
import Foundation

/// One deliberate fault on one cell: what `bootlab lab mutate` runs to prove the suite's
/// validators catch it. The fault is a `FaultPlan` spec, injected as a layer or an explicit
/// option of a step (never by editing sources); the cell is the cheapest cell of the run it
/// applies to (`applicable` lists all of them).
public struct Mutant: Sendable, Codable, Hashable {
    /// Stable name, e.g. `vhdx/BAT entry`, `composition/disk-grow-1MiB`.
    public var id: String
    /// Family for the docs' table: structure, mbr, volume, composition, reconfiguration, backup, overlay.
    public var family: String
    public var summary: String
    /// The `--inject-fault` spec.
    public var fault: String
    /// Where it runs.
    public var cell: Cell
    /// Every cell of the run it applies to.
    public var applicable: [Cell]
    /// The validators one expects to catch it (docs and report; the run reports the actual one).
    public var expected: [String]
    /// Only a boot can catch it (the others never boot: a cheaper validator must catch them).
    public var needsBoot: Bool
}

/// The catalog: every fault the suite must catch, resolved against a set of cells.
public enum MutationCatalog {
    /// The structures each native format's driver names (`DiskFormatDriver.structureSites`) for
    /// the subformats the suite's targets use. The run checks each exposed file's sites against
    /// this list (`MutantPreflightStep`): a structure added to a driver and missing here fails the run.
    public static func structures(format: String, options: [String: String]) -> [String] {
        switch format {
        case "vhdx": return ["header", "region table", "metadata table", "BAT entry"]
        case "vmdk":
            if options["subformat"] == "streamOptimized" { return ["header", "descriptor", "grain directory", "grain table entry", "grain marker", "footer"] }
            return ["header", "descriptor", "grain directory", "redundant grain directory", "grain table entry"]
        case "qcow2": return ["header", "refcount table", "L1 entry", "refcount block", "L2 entry"]
        case "vhd": return options["subformat"] == "fixed" ? ["footer"] : ["footer", "footer copy", "dynamic disk header", "BAT entry"]
        case "vdi": return ["header", "block map entry"]
        default: return []
        }
    }

    /// Relative cost of a cell, to pick where a mutant runs: reconfiguration launches an
    /// appliance, chains and encryption cost a little more, everything else is equal.
    static func cost(_ s: Scenario) -> Int {
        // The extended tier (debootstrapped distributions: minutes per cell) only when nothing else fits.
        (s.isExtended ? 10_000 : 0) + (s.reconfigure ? 100 : 0) + s.backup.incrementals.count * 3 + (s.backup.encryption != .none ? 2 : 0)
            + (s.backup.vault != nil ? 2 : 0) + s.machines.count - 1
    }

    /// The mutants for `cells` of `suite`, sorted by id. A fault no cell of `cells` can carry is
    /// left out (the report lists the catalog's entries that had no cell).
    public static func mutants(suite: LabSuite, cells: [Cell]) -> (mutants: [Mutant], uncovered: [String]) {
        struct Entry {
            var id: String, family: String, summary: String
            var fault: (Scenario, Target) -> String?
            var expected: [String], needsBoot: Bool
            var applies: (Scenario, Target) -> Bool
        }
        func main(_ s: Scenario) -> SourceMachine { s.machines[0] }
        let volumeOnly: (Scenario) -> Bool = { $0.backup.kind == .volumeOnly && $0.machines.count == 1 }
        let relocated: (Scenario) -> Bool = { s in volumeOnly(s) && s.backup.exposePartitionStart.map { $0 != main(s).partitionStart } == true }
        let plain: (Scenario) -> Bool = { !$0.reconfigure }
        var entries: [Entry] = []
        // One byte flipped in each structure of each native format the targets use.
        var formats: [String: [String: String]] = [:]
        for t in suite.targets.values { formats[t.nativeFormat] = t.formatOptions }
        for (format, options) in formats.sorted(by: { $0.key < $1.key }) {
            for name in structures(format: format, options: options) {
                entries.append(Entry(id: "\(format)/\(name)", family: "structure",
                                     summary: "one byte of the \(format) \(name) flipped in the served file",
                                     fault: { _, _ in "structure-byte:\(name)" },
                                     expected: ["deferred-open", "bootlab-check", "qemu-img-check", "qemu-img-compare", "independent-reader"], needsBoot: false,
                                     applies: { s, t in plain(s) && t.nativeFormat == format && t.formatOptions == options }))
            }
        }
        // The synthesized MBR of a volume-only backup.
        for (name, offset, what) in [("boot-code", 0, "the boot code's first instruction"), ("disk-signature", 440, "the disk signature (a wrong disk signature)"),
                                     ("partition-entry", 454, "partition 1's start LBA"), ("boot-signature", 510, "the 55AA boot signature")] {
            entries.append(Entry(id: "mbr/\(name)", family: "mbr", summary: "synthesized MBR: \(what) flipped",
                                 fault: { _, _ in "mbr-byte:\(offset)" }, expected: ["qemu-img-compare"], needsBoot: false,
                                 applies: { s, _ in plain(s) && volumeOnly(s) }))
        }
        // Bytes of the volume the composed disk shows: the FAT BPB, the ext4 superblock.
        entries.append(Entry(id: "volume/bpb-reserved-sectors", family: "volume", summary: "FAT32 BPB: the reserved-sector count (0x0E) flipped",
                             fault: { _, _ in "volume-byte:14" }, expected: ["qemu-img-compare"], needsBoot: false,
                             applies: { s, _ in plain(s) && volumeOnly(s) && main(s).filesystem == .fat32 }))
        entries.append(Entry(id: "volume/bpb-hidden-sectors", family: "volume", summary: "FAT32 BPB: a hidden-sectors byte (0x1C) flipped",
                             fault: { _, _ in "volume-byte:28" }, expected: ["qemu-img-compare"], needsBoot: false,
                             applies: { s, _ in plain(s) && volumeOnly(s) && main(s).filesystem == .fat32 }))
        entries.append(Entry(id: "volume/ext4-superblock", family: "volume", summary: "ext4 superblock: the magic (0x438) flipped",
                             fault: { _, _ in "volume-byte:1080" }, expected: ["qemu-img-compare"], needsBoot: false,
                             applies: { s, _ in plain(s) && volumeOnly(s) && main(s).filesystem == .ext4 }))
        // Composition steps.
        entries.append(Entry(id: "composition/hidden-sectors-skipped", family: "composition",
                             summary: "a relocated FAT volume's hidden-sectors patch left out",
                             fault: { _, _ in "skip-boot-patch" }, expected: ["qemu-img-compare"], needsBoot: false,
                             applies: { s, _ in plain(s) && relocated(s) && main(s).filesystem == .fat32 }))
        entries.append(Entry(id: "composition/partition-start-off-by-one", family: "composition",
                             summary: "the volume placed one sector after the start its MBR entry names",
                             fault: { _, _ in "partition-shift:1" }, expected: ["qemu-img-compare"], needsBoot: false,
                             applies: { s, _ in plain(s) && volumeOnly(s) }))
        entries.append(Entry(id: "composition/disk-grow-1MiB", family: "composition",
                             summary: "a relocated disk composed 1 MiB too large",
                             fault: { _, _ in "disk-grow:1048576" }, expected: ["qemu-img-compare"], needsBoot: false,
                             applies: { s, _ in plain(s) && relocated(s) }))
        // Reconfiguration: the target's controller driver left out of the injected modules.
        entries.append(Entry(id: "reconfiguration/driver-left-out", family: "reconfiguration",
                             summary: "the target's controller driver left out of the reconfigured initramfs",
                             fault: { _, t in "omit-driver:\(t.controller.driver)" }, expected: ["boot"], needsBoot: true,
                             applies: { s, t in s.reconfigure && s.expectation(for: t.name) == .boots && s.machines.count == 1
                                 && !(main(s).storageDrivers ?? []).contains(t.controller.driver) }))
        // Reconfiguration: a module only the real hypervisor needs (Hyper-V gen2's hv_storvsc) left
        // out. No boot can catch it (QEMU has no VMBus); the disk's initramfs read back does.
        func hypervisorModule(_ t: Target) -> String? {
            let mods = suite.hypervisorModules(for: [t.name])
            return mods.contains("hv_storvsc") ? "hv_storvsc" : mods.first
        }
        entries.append(Entry(id: "reconfiguration/hypervisor-module-left-out", family: "reconfiguration",
                             summary: "a module the real hypervisor needs (drivers.json hypervisorModules, e.g. hv_storvsc) left out of the reconfigured initramfs",
                             fault: { _, t in hypervisorModule(t).map { "omit-driver:\($0)" } }, expected: ["hypervisor-modules"], needsBoot: false,
                             applies: { s, t in s.reconfigure && s.machines.count == 1 && hypervisorModule(t) != nil }))
        // The backup reader: a stale block of a chain.
        entries.append(Entry(id: "backup/stale-cache-block", family: "backup",
                             summary: "a chain's newest block served as the older image's version (a stale cache entry)",
                             fault: { _, _ in "stale-block" }, expected: ["qemu-img-compare", "incremental-files"], needsBoot: false,
                             applies: { s, _ in plain(s) && !s.backup.incrementals.isEmpty }))
        // The write overlay, once per front-end kind.
        for fe in [BackupSpec.FrontEnd.fuse, .nbd] {
            entries.append(Entry(id: "overlay/dropped-write-\(fe.rawValue)", family: "overlay",
                                 summary: "the write overlay (\(fe.rawValue)) acknowledges and drops a guest write",
                                 fault: { _, _ in "drop-write:payload" }, expected: ["write-overlay"], needsBoot: false,
                                 applies: { s, _ in plain(s) && s.backup.frontend == fe }))
        }

        var out: [Mutant] = []
        var uncovered: [String] = []
        for e in entries {
            // Only cells expected to boot: on a must-not-boot cell the boot cannot tell a fault.
            let fitting = cells.filter { c in
                guard let s = suite.scenarios.first(where: { $0.name == c.scenario }), let t = suite.targets[c.target] else { return false }
                return s.expectation(for: t.name) == .boots && e.applies(s, t)
            }
            guard let chosen = fitting.min(by: { a, b in
                let ca = suite.scenarios.first { $0.name == a.scenario }.map(cost) ?? 0
                let cb = suite.scenarios.first { $0.name == b.scenario }.map(cost) ?? 0
                return ca != cb ? ca < cb : a < b
            }), let s = suite.scenarios.first(where: { $0.name == chosen.scenario }), let t = suite.targets[chosen.target],
                  let fault = e.fault(s, t) else {
                uncovered.append(e.id)
                continue
            }
            out.append(Mutant(id: e.id, family: e.family, summary: e.summary, fault: fault, cell: chosen, applicable: fitting,
                              expected: e.expected, needsBoot: e.needsBoot))
        }
        return (out.sorted { $0.id < $1.id }, uncovered)
    }

    /// `--sample N --seed S`: N mutants chosen deterministically (the N smallest keys of a hash
    /// of seed and id), returned in id order. N ≥ count returns all.
    public static func sample(_ mutants: [Mutant], count: Int, seed: UInt64) -> [Mutant] {
        guard count < mutants.count else { return mutants }
        func key(_ id: String) -> UInt64 {
            // FNV-1a over the id, then splitmix64 with the seed: stable across runs and platforms.
            var h: UInt64 = 0xcbf29ce484222325
            for b in id.utf8 { h = (h ^ UInt64(b)) &* 0x100000001b3 }
            var z = h &+ seed &* 0x9E3779B97F4A7C15
            z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
            z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
            return z ^ (z >> 31)
        }
        return mutants.sorted { (key($0.id), $0.id) < (key($1.id), $1.id) }.prefix(max(0, count)).sorted { $0.id < $1.id }
    }
}
