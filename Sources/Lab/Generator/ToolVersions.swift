import Foundation

/// The versions of the Debian packages a generated disk is made with (`versions.json`), kept for
/// information beside the goldens. They never decide a verdict: `GoldenInputs` does, from what
/// the generator actually read (docs/scenarios.md, "Goldens keyed to inputs").
public struct ToolVersions: Sendable, Codable, Equatable {
    /// Bumped whenever the generator's recipe changes its output on purpose.
    /// 2: modules under lib/modules/<release>/ in the initramfs (load list by path) and the
    /// storage module set on the volume.
    /// 3: network adapters — the init reports them (`BOOTLAB-NIC…` lines), the initramfs carries the
    /// NIC modules of the targets whose controllers it carries, the volume every adapter's; the kernel
    /// command line gains no_timer_check (TCG on a loaded host fails the IO-APIC timer check).
    public static let recipe = 3

    public var recipe: Int
    /// Package name → version (kernel packages, busybox-static, e2fsprogs, dosfstools, mtools,
    /// syslinux, extlinux, gzip).
    public var packages: [String: String]

    public init(recipe: Int = ToolVersions.recipe, packages: [String: String]) {
        self.recipe = recipe
        self.packages = packages
    }

    static let hostPackages = ["busybox-static", "e2fsprogs", "libext2fs2", "dosfstools", "mtools", "syslinux", "syslinux-common", "extlinux", "gzip"]

    /// Installed versions of the host tools the generator runs, from dpkg.
    static func host() throws -> [String: String] {
        var result: [String: String] = [:]
        for package in hostPackages {
            let out = try Shell.run("dpkg-query", ["-W", "-f=${Version}", package], check: false)
            guard out.status == 0, !out.stdout.isEmpty else {
                throw LabError.missing("the Debian package \(package)", need: "the generator runs it; ci/setup installs it from ci/packages/lab.txt")
            }
            result[package] = out.stdout
        }
        return result
    }
}
