import Foundation

/// A Debian kernel package unpacked (never installed) under the cache, with `modules.dep` built.
public struct KernelTree: Sendable {
    public var flavour: KernelFlavour
    public var package: String
    public var version: String
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    public var release: String
    public var root: URL

    public var vmlinuz: URL { root.appendingPathComponent("boot/vmlinuz-\(release)") }
    public var modulesDirectory: URL { root.appendingPathComponent("lib/modules/\(release)") }
}

/// The lab's artefact cache: `$BOOTLAB_CACHE` (default `/var/tmp/bootlab-cache`).
public enum LabCache {
    public static var root: URL {
        let env = ProcessInfo.processInfo.environment["BOOTLAB_CACHE"] ?? ""
        return URL(fileURLWithPath: env.isEmpty ? "/var/tmp/bootlab-cache" : env)
    }

    private static let kernelLock = NSLock()

    /// Fetches (`apt-get download` + `dpkg-deb -x`) the current kernel of a flavour, once.
    /// Offline, the newest kernel already in the cache is used.
    public static func kernel(_ flavour: KernelFlavour) throws -> KernelTree {
        kernelLock.lock()
        defer { kernelLock.unlock() }
        let fm = FileManager.default
        let kernels = root.appendingPathComponent("kernels")
        try fm.createDirectory(at: kernels, withIntermediateDirectories: true)

        let resolved = try? resolvePackage(flavour)
        if let (package, version) = resolved {
            let dir = kernels.appendingPathComponent("\(package)_\(version)")
            if let tree = try? existingTree(dir, flavour: flavour, package: package, version: version) { return tree }
            let work = kernels.appendingPathComponent(".download-\(package)-\(getpid())")
            try? fm.removeItem(at: work)
            try fm.createDirectory(at: work, withIntermediateDirectories: true)
            defer { try? fm.removeItem(at: work) }
            try Shell.run("apt-get", ["download", "\(package)=\(version)"], currentDirectory: work)
            guard let deb = try fm.contentsOfDirectory(atPath: work.path).first(where: { $0.hasSuffix(".deb") }) else {
                throw LabError.kernel(package, reason: "apt-get download produced no .deb")
            }
            let staging = work.appendingPathComponent("tree")
            try Shell.run("dpkg-deb", ["-x", work.appendingPathComponent(deb).path, staging.path])
            let release = try releaseName(staging)
            try Shell.run("depmod", ["-b", staging.path, release])
            try? fm.removeItem(at: dir)
            try fm.moveItem(at: staging, to: dir)
            return try existingTree(dir, flavour: flavour, package: package, version: version)
        }
        // Offline: fall back to what is cached.
        let marker = flavour == .cloud ? "-cloud-amd64_" : "-amd64_"
        let candidates = (try? fm.contentsOfDirectory(atPath: kernels.path)) ?? []
        let matching = candidates.filter { $0.hasPrefix("linux-image-") && $0.contains(marker) && (flavour == .cloud || !$0.contains("-cloud-")) }.sorted()
        guard let name = matching.last else {
            throw LabError.kernel(flavour.metaPackage, reason: "apt cannot resolve it and no kernel is cached in \(kernels.path)")
        }
        let parts = name.split(separator: "_", maxSplits: 1).map(String.init)
        return try existingTree(kernels.appendingPathComponent(name), flavour: flavour, package: parts[0], version: parts[1])
    }

    static func resolvePackage(_ flavour: KernelFlavour) throws -> (String, String) {
        let deps = try Shell.run("apt-cache", ["depends", flavour.metaPackage]).stdout
        guard let line = deps.split(separator: "\n").first(where: { $0.contains("Depends: linux-image-") }) else {
            throw LabError.kernel(flavour.metaPackage, reason: "apt-cache depends names no linux-image dependency")
        }
        let package = line.split(separator: " ").last.map(String.init) ?? ""
        let policy = try Shell.run("apt-cache", ["policy", package]).stdout
        guard let cand = policy.split(separator: "\n").first(where: { $0.contains("Candidate:") }),
              let version = cand.split(separator: " ").last.map(String.init), version != "(none)" else {
            throw LabError.kernel(package, reason: "apt-cache policy shows no candidate version")
        }
        return (package, version)
    }

    static func releaseName(_ tree: URL) throws -> String {
        let modules = tree.appendingPathComponent("lib/modules")
        guard let release = try FileManager.default.contentsOfDirectory(atPath: modules.path).sorted().first else {
            throw LabError.kernel(tree.lastPathComponent, reason: "the unpacked package has no lib/modules")
        }
        return release
    }

    static func existingTree(_ dir: URL, flavour: KernelFlavour, package: String, version: String) throws -> KernelTree {
        let release = try releaseName(dir)
        let tree = KernelTree(flavour: flavour, package: package, version: version, release: release, root: dir)
        guard FileManager.default.fileExists(atPath: tree.vmlinuz.path),
              FileManager.default.fileExists(atPath: tree.modulesDirectory.appendingPathComponent("modules.dep").path) else {
            throw LabError.kernel(package, reason: "incomplete kernel tree in \(dir.path) (no vmlinuz or modules.dep)")
        }
        return tree
    }
}
