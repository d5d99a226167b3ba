/// Every kind of mutation, for traces and for the coverage-of-mutation-kinds report.
public enum MutationKind: String, CaseIterable, Sendable, Codable {
    /// Size, count and version fields: 0, 1, ±1, ×2, ÷2, type maxima, powers of two, spec limits.
    case boundaryValue
    /// Offset and size fields pointing at, just before and just past the end of the file.
    case nearEOF
    /// An offset field given another offset field's value (two structures overlap).
    case overlap
    /// A GUID copied from another GUID field (mismatch between copies), zeroed or random.
    case guidMismatch
    /// Sequence numbers: ±1, equal to the other copy's, 0, maximum.
    case sequence
    /// Flag fields: one bit flipped, all set, none set.
    case flagBits
    /// State and type fields (BAT states, block kinds, partition types): every small value.
    case state
    /// One byte of a signature changed.
    case signature
    /// The file cut at a structure boundary (± a few bytes).
    case truncate
    /// Random bytes in one field.
    case fieldBytes
    /// One checksum deliberately left wrong (`--break-checksums`).
    case breakChecksum
    /// `--dumb`: bits flipped at uniformly random offsets.
    case dumbBitFlip
    /// `--dumb`: random bytes at uniformly random offsets.
    case dumbByte
}

/// A generated input with the mutations that made it.
public struct Mutant: Sendable {
    public var bytes: [UInt8]
    public var trace: [String]
    public var kinds: [MutationKind]
}

/// How the fuzzer changes files.
public enum MutationMode: String, Sendable, Codable {
    /// Field-aware mutations, then every checksum recomputed.
    case structured
    /// Field-aware, then (half of the time) one checksum deliberately left wrong.
    case breakChecksums
    /// A checksum-unaware byte flipper (the baseline).
    case dumb
}

public enum Mutator {
    /// A mutant of `seed`, deterministic in `random`.
    /// `parentMap` is `format.map(seed)` when the caller keeps it (the campaign maps each corpus
    /// entry once).
    public static func mutate(_ seed: [UInt8], format: any FuzzFormat, extraFields: [Field] = [], parentMap: StructureMap? = nil,
                              mode: MutationMode, random: inout FuzzRandom) -> Mutant {
        if mode == .dumb { return dumb(seed, random: &random) }
        var b = seed
        var m = parentMap ?? format.map(b)
        m.fields += extraFields
        var trace: [String] = [], kinds: [MutationKind] = []
        let steps = 1 + random.below(4)
        for _ in 0..<steps {
            if random.percent(7), !m.boundaries.isEmpty {
                let cut = random.pick(m.boundaries) + random.pick([0, 0, 1, -1, 8, -8, 512, -512, 4096])
                let at = max(0, min(b.count, cut))
                guard at < b.count else { continue }
                trace.append("truncate at \(at) (of \(b.count))")
                kinds.append(.truncate)
                b.removeSubrange(at...)
                continue
            }
            guard !m.fields.isEmpty else { break }
            // A structure first, then one of its fields: a table of many entries (the BAT) does
            // not drown the headers.
            let structures = Array(Set(m.fields.map(\.structure))).sorted()
            let s = random.pick(structures)
            let f = random.pick(m.fields.filter { $0.structure == s })
            guard f.offset >= 0, f.offset + f.width <= b.count else { continue }
            let (kind, note) = mutate(field: f, in: &b, map: m, random: &random)
            trace.append("\(kind.rawValue) \(f.label)@\(f.offset): \(note)")
            kinds.append(kind)
        }
        if kinds.isEmpty, let f = m.fields.first(where: { $0.offset + $0.width <= b.count }) {
            let (kind, note) = mutate(field: f, in: &b, map: m, random: &random)
            trace.append("\(kind.rawValue) \(f.label)@\(f.offset): \(note)"); kinds.append(kind)
        }
        // The mutant's own map: a mutated count or offset moves what its checksum covers.
        let after = format.map(b)
        let fixed = ChecksumFixer.fix(&b, after.checksums)
        if !fixed.isEmpty { trace.append("checksums recomputed: \(fixed.joined(separator: ", "))") }
        if mode == .breakChecksums, random.percent(50) {
            let candidates = after.checksums.filter { $0.field + $0.width <= b.count }
            if !candidates.isEmpty {
                let c = random.pick(candidates)
                b[c.field] ^= UInt8(1 + random.below(255))
                trace.append("breakChecksum \(c.name)@\(c.field)")
                kinds.append(.breakChecksum)
            }
        }
        return Mutant(bytes: b, trace: trace, kinds: kinds)
    }

    /// The baseline: 1–8 bytes changed at uniformly random offsets, checksums untouched.
    public static func dumb(_ seed: [UInt8], random: inout FuzzRandom) -> Mutant {
        var b = seed, trace: [String] = [], kinds: [MutationKind] = []
        guard !b.isEmpty else { return Mutant(bytes: b, trace: [], kinds: []) }
        for _ in 0..<1 + random.below(8) {
            let at = random.below(b.count)
            if random.percent(50) {
                let bit = UInt8(1) << UInt8(random.below(8))
                b[at] ^= bit; trace.append("dumbBitFlip @\(at) ^0x\(String(bit, radix: 16))"); kinds.append(.dumbBitFlip)
            } else {
                let v = UInt8(truncatingIfNeeded: random.next())
                b[at] = v; trace.append("dumbByte @\(at) =0x\(String(v, radix: 16))"); kinds.append(.dumbByte)
            }
        }
        return Mutant(bytes: b, trace: trace, kinds: kinds)
    }

    /// Values at which size and count checks tend to break: type and sign boundaries, small
    /// table sizes just past common fixed capacities, spec limits (2047 VHDX entries, 128 GPT
    /// entries, 4096-byte sectors).
    static let interesting: [UInt64] = [0, 1, 16, 17, 32, 64, 100, 127, 128, 129, 255, 256, 512, 1000, 1024, 2047, 2048,
                                        4095, 4096, 32767, 32768, 65535, 65536, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff]

    static func maxValue(_ width: Int) -> UInt64 { width >= 8 ? .max : (1 << UInt64(8 * width)) - 1 }

    /// Mutates one field by its meaning; returns the kind and "old -> new".
    static func mutate(field f: Field, in b: inout [UInt8], map: StructureMap, random: inout FuzzRandom) -> (MutationKind, String) {
        if f.width > 8 {   // GUIDs, signatures and other byte strings
            let old = Array(b[f.offset..<f.offset + f.width])
            var kind = MutationKind.fieldBytes
            var new = old
            switch f.meaning {
            case .guid:
                kind = .guidMismatch
                let others = map.fields.filter { $0.meaning == .guid && $0.width == f.width && $0.offset != f.offset && $0.offset + $0.width <= b.count }
                switch random.below(4) {
                case 0 where !others.isEmpty:
                    let o = random.pick(others); new = Array(b[o.offset..<o.offset + o.width])
                case 1: new = [UInt8](repeating: 0, count: f.width)
                case 2: new[random.below(f.width)] ^= 1
                default: new = random.bytes(f.width)
                }
            case .signature:
                kind = .signature
                new[random.below(f.width)] ^= UInt8(1 + random.below(255))
            default:
                for _ in 0..<1 + random.below(3) { new[random.below(f.width)] = UInt8(truncatingIfNeeded: random.next()) }
            }
            b.replaceSubrange(f.offset..<f.offset + f.width, with: new)
            return (kind, "\(old.prefix(8).map { String($0, radix: 16) }.joined()) -> \(new.prefix(8).map { String($0, radix: 16) }.joined())")
        }
        let old = b.value(at: f.offset, width: f.width, endian: f.endian)
        let maxV = maxValue(f.width)
        let eof = UInt64(b.count) / max(1, f.unit)
        var kind: MutationKind
        var v: UInt64
        switch f.meaning {
        case .offset:
            let others = map.fields.filter { $0.meaning == .offset && $0.unit == f.unit && $0.offset != f.offset && $0.offset + $0.width <= b.count }
            switch random.below(4) {
            case 0 where !others.isEmpty:
                kind = .overlap
                let o = random.pick(others)
                v = b.value(at: o.offset, width: o.width, endian: o.endian) &+ UInt64(random.pick([0, 0, 1]))
            case 0, 1:
                kind = .nearEOF
                v = random.pick([eof, eof &- 1, eof &+ 1, eof &- 8, eof &* 2, eof / 2])
            case 2:
                kind = .boundaryValue
                v = random.pick([0, 1, maxV, maxV &- 1, old &+ 1, old &- 1, old &* 2, 1 << UInt64(random.below(8 * f.width))])
            default:
                kind = .fieldBytes
                v = old ^ (1 << UInt64(random.below(8 * f.width)))
            }
        case .size, .count, .version:
            if random.percent(30), f.meaning != .version {
                kind = .nearEOF
                v = random.pick([eof, eof &+ 1, eof &- 1, eof &* 2])
            } else {
                kind = .boundaryValue
                v = random.percent(60) ? random.pick(interesting)
                                       : random.pick([old &+ 1, old &- 1, old &* 2, old &* 16, old / 2, maxV, maxV / 2 &+ 1,
                                                      1 << UInt64(random.below(8 * f.width))])
            }
        case .sequence:
            kind = .sequence
            let others = map.fields.filter { $0.meaning == .sequence && $0.offset != f.offset && $0.width == f.width && $0.offset + $0.width <= b.count }
            let other = others.isEmpty ? old : b.value(at: random.pick(others).offset, width: f.width, endian: f.endian)
            v = random.pick([old &+ 1, old &- 1, other, other &+ 1, 0, maxV, old &+ 1_000_000])
        case .flags:
            kind = .flagBits
            v = random.pick([old ^ (1 << UInt64(random.below(min(32, 8 * f.width)))), maxV, 0, old | 1, old ^ 0x80])
        case .state:
            kind = .state
            v = random.percent(70) ? UInt64(random.below(9)) : (old & ~7) | UInt64(random.below(8))
        case .checksum:
            kind = .fieldBytes
            v = old ^ 1
        default:
            kind = .fieldBytes
            v = random.next()
        }
        v &= maxV
        if v == old { v = (old &+ 1) & maxV }
        b.setValue(v, at: f.offset, width: f.width, endian: f.endian)
        return (kind, "\(old) -> \(v)")
    }
}
