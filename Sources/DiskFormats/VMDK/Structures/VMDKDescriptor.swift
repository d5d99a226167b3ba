import BlockCore

/// A VMDK text descriptor: header lines (`version`, `CID`, `parentCID`, `createType`, …), extent
/// lines and the disk database (`ddb.*`). Rendered the way VMware writes it; parsed leniently
/// (VMware's and qemu's spacing and quoting, comments, CRLF), with every count bounded.
public struct VMDKDescriptor: Sendable, Equatable {
    /// One extent line: `RW 2048 SPARSE "disk.vmdk"`, `RW 2048 FLAT "disk-flat.vmdk" 0`, `RW 2048 ZERO`.
    public struct Extent: Sendable, Equatable {
        public var access: String
        public var sectors: UInt64
        public var type: String
        public var fileName: String?
        /// Sector offset in the file (FLAT/VMFS extents).
        public var offset: UInt64

        public init(access: String = "RW", sectors: UInt64, type: String, fileName: String?, offset: UInt64 = 0) {
            self.access = access
            self.sectors = sectors
            self.type = type
            self.fileName = fileName
            self.offset = offset
        }

        public var line: String {
            var s = "\(access) \(sectors) \(type)"
            if let f = fileName { s += " \"\(f)\"" }
            if type == "FLAT" || type == "VMFS" || type == "VMFSRDM" || type == "VMFSRAW", offset != 0 || type == "FLAT" { s += " \(offset)" }
            return s
        }
    }

    /// Header key/value pairs in order (`version`, `encoding`, `CID`, `parentCID`, `createType`, …).
    public var header: [(key: String, value: String)]
    public var extents: [Extent]
    /// Disk database entries in order, values unquoted.
    public var ddb: [(key: String, value: String)]

    public init(header: [(key: String, value: String)], extents: [Extent], ddb: [(key: String, value: String)]) {
        self.header = header
        self.extents = extents
        self.ddb = ddb
    }

    public static func == (a: VMDKDescriptor, b: VMDKDescriptor) -> Bool {
        a.header.map { [$0.key, $0.value] } == b.header.map { [$0.key, $0.value] } && a.extents == b.extents
            && a.ddb.map { [$0.key, $0.value] } == b.ddb.map { [$0.key, $0.value] }
    }

    public func value(_ key: String) -> String? {
        header.first { $0.key.lowercased() == key.lowercased() }?.value
    }

    public func ddbValue(_ key: String) -> String? { ddb.first { $0.key == key }?.value }
    public var createType: String? { value("createType") }
    public var cid: UInt32? { value("CID").flatMap { UInt32($0, radix: 16) } }
    public var parentCID: UInt32? { value("parentCID").flatMap { UInt32($0, radix: 16) } }

    /// The text, as VMware lays it out: header lines, a blank line, `# Extent description`, the
    /// extents, a blank line, `# The Disk Data Base`, `#DDB`, a blank line, the `ddb.` lines.
    public func render() -> String {
        var lines = [VMDK.descriptorSignature]
        for (k, v) in header {
            let quoted = k == "createType" || k == "encoding" || k == "parentFileNameHint"
            lines.append(quoted ? "\(k)=\"\(v)\"" : "\(k)=\(v)")
        }
        lines.append("")
        lines.append("# Extent description")
        lines += extents.map(\.line)
        lines.append("")
        lines.append("# The Disk Data Base")
        lines.append("#DDB")
        lines.append("")
        lines += ddb.map { "\($0.key) = \"\($0.value)\"" }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Parses descriptor text (the bytes up to the first NUL). `at` is where it starts in its file.
    public static func parse(_ bytes: [UInt8], at base: UInt64) throws -> VMDKDescriptor {
        func err(_ off: Int, _ reason: String) -> FormatError {
            FormatError(VMDK.errorName, "descriptor", at: base + UInt64(off), reason)
        }
        guard UInt64(bytes.count) <= VMDK.maxDescriptorBytes else { throw err(0, "descriptor of \(bytes.count) bytes is larger than 1 MiB") }
        let end = bytes.firstIndex(of: 0) ?? bytes.count
        var header: [(String, String)] = [], extents: [Extent] = [], ddb: [(String, String)] = []
        var lineStart = 0
        while lineStart < end {
            let nl = bytes[lineStart..<end].firstIndex(of: 0x0A) ?? end
            var raw = Array(bytes[lineStart..<nl])
            let at = lineStart
            lineStart = nl + 1
            if raw.last == 0x0D { raw.removeLast() }
            guard let text = String(validating: raw, as: UTF8.self) else { throw err(at, "line is not UTF-8") }
            let line = text.trimmingSpaces()
            if line.isEmpty { continue }
            if line.hasPrefix("#") { continue }  // comments, "# Disk DescriptorFile" included
            let words = line.split(separator: " ", maxSplits: 1).map(String.init)
            if ["RW", "RDONLY", "NOACCESS"].contains(words[0]) {
                guard extents.count < VMDK.maxExtents else { throw err(at, "more than \(VMDK.maxExtents) extents") }
                extents.append(try parseExtent(line, at: base + UInt64(at)))
                continue
            }
            guard let eq = line.firstIndex(of: "=") else { throw err(at, "line \"\(line.prefix(60))\" is neither key=value nor an extent") }
            let key = String(line[..<eq]).trimmingSpaces()
            var value = String(line[line.index(after: eq)...]).trimmingSpaces()
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            guard !key.isEmpty else { throw err(at, "empty key") }
            guard header.count + ddb.count < 100_000 else { throw err(at, "too many keys") }
            if key.hasPrefix("ddb.") { ddb.append((key, value)) } else { header.append((key, value)) }
        }
        return VMDKDescriptor(header: header, extents: extents, ddb: ddb)
    }

    static func parseExtent(_ line: String, at: UInt64) throws -> Extent {
        func err(_ r: String) -> FormatError { FormatError(VMDK.errorName, "descriptor extent", at: at, r) }
        // ACCESS SECTORS TYPE ["FILE" [OFFSET]]
        var rest = Substring(line)
        func word() -> String? {
            rest = rest.drop { $0 == " " || $0 == "\t" }
            guard !rest.isEmpty else { return nil }
            if rest.first == "\"" {
                rest = rest.dropFirst()
                guard let q = rest.firstIndex(of: "\"") else { return nil }
                let w = String(rest[..<q])
                rest = rest[rest.index(after: q)...]
                return w
            }
            let w = rest.prefix { $0 != " " && $0 != "\t" }
            rest = rest.dropFirst(w.count)
            return String(w)
        }
        guard let access = word(), let s = word(), let type = word() else { throw err("extent line \"\(line.prefix(80))\" is incomplete") }
        guard let sectors = UInt64(s), sectors <= VMDK.maxCapacitySectors else { throw err("extent size \"\(s.prefix(30))\" is not a sector count up to \(VMDK.maxCapacitySectors)") }
        let known = ["FLAT", "SPARSE", "ZERO", "VMFS", "VMFSSPARSE", "VMFSRDM", "VMFSRAW"]
        guard known.contains(type) else { throw err("unknown extent type \(type.prefix(20))") }
        if type == "ZERO" { return Extent(access: access, sectors: sectors, type: type, fileName: nil) }
        guard line.contains("\""), let file = word() else { throw err("\(type) extent without a quoted file name") }
        var offset: UInt64 = 0
        if let o = word() {
            guard let v = UInt64(o), v <= VMDK.maxCapacitySectors else { throw err("extent offset \"\(o.prefix(30))\" is not a sector number") }
            offset = v
        }
        return Extent(access: access, sectors: sectors, type: type, fileName: file, offset: offset)
    }
}

extension String {  // fileprivate: other formats of the module may have helpers of the same name
    fileprivate func trimmingSpaces() -> String {
        let s = drop { $0 == " " || $0 == "\t" }
        return String(s.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }

}
