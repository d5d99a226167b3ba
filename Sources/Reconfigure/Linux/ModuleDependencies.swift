import BlockCore
import Foundation

/// A kernel's `modules.dep` (depmod(8) format: `path: dep1 dep2 …`, paths relative to
/// /lib/modules/<version>), used to put the target's drivers and their dependencies in load order.
public struct ModuleDependencies: Sendable {
    /// Module path → the paths it depends on (the full transitive list, as depmod writes it).
    public private(set) var dependencies: [String: [String]] = [:]
    /// Normalized module name (`-` as `_`, no `.ko*`) → path.
    public private(set) var pathByName: [String: String] = [:]
    /// The lines in file order, to append them unchanged to another modules.dep.
    public private(set) var lines: [String: String] = [:]

    public init(text: String) throws {
        var lineNo = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNo += 1
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":") else {
                throw FormatError("modules.dep", "line \(lineNo)", at: 0, "no ':' after the module path")
            }
            let path = String(line[..<colon])
            let deps = line[line.index(after: colon)...].split(separator: " ").map(String.init)
            dependencies[path] = deps
            lines[path] = line
            pathByName[ModuleDependencies.name(ofPath: path)] = path
        }
    }

    /// `kernel/drivers/ata/ata_piix.ko.xz` → `ata_piix`; `crc-t10dif` → `crc_t10dif`.
    public static func name(ofPath path: String) -> String {
        var base = Substring(path.split(separator: "/").last ?? Substring(path))
        if let r = base.range(of: ".ko") { base = base[..<r.lowerBound] }
        return normalize(String(base))
    }

    public static func normalize(_ name: String) -> String { name.replacingOccurrences(of: "-", with: "_") }

    /// Paths of `names` and everything they need, dependencies first (each module once).
    public func loadOrder(for names: [String]) throws -> [String] {
        var order: [String] = []
        var seen = Set<String>()
        func visit(_ path: String, depth: Int) throws {
            guard !seen.contains(path) else { return }
            guard depth < 64 else { throw FormatError("modules.dep", path, at: 0, "dependency chain deeper than 64 (a cycle?)") }
            seen.insert(path)
            // depmod lists deps so that the last must load first (modprobe walks it backwards).
            for d in (dependencies[path] ?? []).reversed() { try visit(d, depth: depth + 1) }
            order.append(path)
        }
        for n in names {
            guard let p = pathByName[ModuleDependencies.normalize(n)] else {
                throw ReconfigureError.guest("module \(n) is not in the guest's modules.dep")
            }
            try visit(p, depth: 0)
        }
        return order
    }
}
