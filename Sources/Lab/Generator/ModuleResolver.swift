import Foundation

/// Turns module names into `.ko` files in load order, dependencies first, from the kernel's
/// `modules.dep`; modules built into the kernel (`modules.builtin`) need no file.
public struct ModuleResolver: Sendable {
    public struct Resolution: Sendable, Codable, Equatable {
        /// Relative paths under lib/modules/<release>, in load order.
        public var files: [String]
        public var builtin: [String]
        /// Asked for but neither a module nor built in (recorded, and reported by the guest).
        public var absent: [String]
    }

    var dependencies: [String: [String]] = [:]   // relative path → dependency paths
    var pathByName: [String: String] = [:]
    var builtin: Set<String> = []

    public init(kernel: KernelTree) throws {
        let dep = try String(contentsOf: kernel.modulesDirectory.appendingPathComponent("modules.dep"), encoding: .utf8)
        for line in dep.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard let head = parts.first else { continue }
            let path = String(head)
            dependencies[path] = parts.count > 1 ? parts[1].split(separator: " ").map(String.init) : []
            pathByName[Self.name(of: path)] = path
        }
        let builtinText = (try? String(contentsOf: kernel.modulesDirectory.appendingPathComponent("modules.builtin"), encoding: .utf8)) ?? ""
        builtin = Set(builtinText.split(separator: "\n").map { Self.name(of: String($0)) })
    }

    /// Module names compare with `-` and `_` equal, as modprobe does.
    static func name(of path: String) -> String {
        var base = String(path.split(separator: "/").last ?? "")
        for suffix in [".xz", ".zst", ".gz", ".ko"] where base.hasSuffix(suffix) { base.removeLast(suffix.count) }
        return base.replacingOccurrences(of: "-", with: "_")
    }

    public func resolve(_ names: [String]) -> Resolution {
        var result = Resolution(files: [], builtin: [], absent: [])
        var loaded = Set<String>()
        func load(_ path: String) {
            guard !loaded.contains(path) else { return }
            loaded.insert(path)
            // modules.dep lists the transitive closure, deepest last; loading each one's own
            // dependencies first gives a valid order whatever the listing order is.
            for dep in (dependencies[path] ?? []).reversed() { load(dep) }
            result.files.append(path)
        }
        for name in names {
            let key = name.replacingOccurrences(of: "-", with: "_")
            if let path = pathByName[key] { load(path) }
            else if builtin.contains(key) { result.builtin.append(name) }
            else { result.absent.append(name) }
        }
        return result
    }
}
