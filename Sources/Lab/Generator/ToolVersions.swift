import Foundation

/// The versions of every input tool a generated disk depends on (`versions.json`). When a golden
/// digest changes and these differ from the recorded ones, the change is **input drift** (a new
/// kernel or mkfs), not a regression of our code.
public struct ToolVersions: Sendable, Codable, Equatable {
    /// Bumped whenever the generator's recipe changes its output on purpose.
    /// 2: modules under lib/modules/<release>/ in the initramfs (load list by path) and the
    /// storage module set on the volume.
    public static let recipe = 2

    public var recipe: Int
    /// Package name → version (kernel packages, busybox-static, e2fsprogs, dosfstools, mtools,
    /// syslinux, extlinux, gzip).
    public var packages: [String: String]

    public init(recipe: Int = ToolVersions.recipe, packages: [String: String]) {
        self.recipe = recipe
        self.packages = packages
    }

    /// Human-readable differences (`e2fsprogs 1.47.0-2 → 1.47.1-1`), empty when equal.
    public func changes(from old: ToolVersions) -> [String] {
        var out: [String] = []
        if recipe != old.recipe { out.append("generator recipe \(old.recipe) → \(recipe)") }
        for key in Set(packages.keys).union(old.packages.keys).sorted() where packages[key] != old.packages[key] {
            out.append("\(key) \(old.packages[key] ?? "(none)") → \(packages[key] ?? "(none)")")
        }
        return out
    }

    static let hostPackages = ["busybox-static", "e2fsprogs", "dosfstools", "mtools", "syslinux", "syslinux-common", "extlinux", "gzip"]

    /// Installed versions of the host tools the generator runs, from dpkg.
    static func host() throws -> [String: String] {
        var result: [String: String] = [:]
        for package in hostPackages {
            let out = try Shell.run("dpkg-query", ["-W", "-f=${Version}", package], check: false)
            guard out.status == 0, !out.stdout.isEmpty else {
                throw LabError("generator needs the Debian package \(package) (see ci/packages/lab.txt)")
            }
            result[package] = out.stdout
        }
        return result
    }
}
