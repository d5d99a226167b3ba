import Foundation
import Processes

/// What a lab stage took from outside this repository: Debian package versions and the digests of
/// the files it actually read from them (the kernel image, the module files, busybox, mbr.bin, the
/// mkfs/syslinux binaries). A golden verdict calls an output change **drift** only when one of
/// these changed; a version string alone (a `+b2` rebuild of the same source) changes nothing
/// when the files' bytes and the outputs are the same.
public struct ExternalInputs: Sendable, Codable, Equatable {
    /// Package name → version (information, and a changed input when the outputs changed).
    public var packages: [String: String]
    /// What was read (`kernel image linux-image-…`, `tool mke2fs`) → SHA-256 of its bytes.
    public var files: [String: String]

    public init(packages: [String: String] = [:], files: [String: String] = [:]) {
        self.packages = packages
        self.files = files
    }

    /// Each changed input, named (`e2fsprogs 1.47.0-2+b2 → 1.47.0-2`, `kernel image … sha256
    /// 1c65…→9ab0…`); empty when nothing changed.
    public func changes(from old: ExternalInputs) -> [String] {
        var out: [String] = []
        for key in Set(packages.keys).union(old.packages.keys).sorted() where packages[key] != old.packages[key] {
            out.append("package \(key) \(old.packages[key] ?? "(none)") → \(packages[key] ?? "(none)")")
        }
        for key in Set(files.keys).union(old.files.keys).sorted() where files[key] != old.files[key] {
            out.append("\(key) sha256 \(Self.short(old.files[key])) → \(Self.short(files[key]))")
        }
        return out
    }

    public mutating func merge(_ other: ExternalInputs) {
        packages.merge(other.packages) { a, _ in a }
        files.merge(other.files) { a, _ in a }
    }

    static func short(_ digest: String?) -> String { digest.map { String($0.prefix(12)) } ?? "(none)" }

    /// Records a file read from outside the repository under `label`.
    mutating func addFile(_ label: String, _ url: URL) throws {
        files[label] = try Digest.file(url)
    }

    /// Records the binary `tool` resolves to on `PATH` (symlinks followed: `mcopy` is `mtools`).
    mutating func addTool(_ tool: String) throws {
        guard let url = Self.resolve(tool) else {
            throw LabError.missing("the tool \(tool) on PATH", need: "ci/setup installs it; see ci/packages/lab.txt")
        }
        files["tool \(tool)"] = try Digest.file(url)
    }

    /// Records a Debian package's version and the digest of every shared object it ships (the
    /// code a linked library brings into our own process: libzstd's compressor, for example).
    mutating func addLibraryPackage(_ package: String) throws {
        let version = try Shell.run("dpkg-query", ["-W", "-f=${Version}", package], check: false)
        guard version.status == 0, !version.stdout.isEmpty else {
            throw LabError.missing("the Debian package \(package)", need: "ci/setup installs it")
        }
        packages[package] = version.stdout
        let listed = try Shell.run("dpkg-query", ["-L", package]).stdout.split(separator: "\n").map(String.init)
        var entries: [(String, String)] = []
        for path in listed.sorted() where path.contains(".so") {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
                  (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) == nil else { continue }
            entries.append((path, try Digest.file(URL(fileURLWithPath: path))))
        }
        files["library \(package)"] = Self.combined(entries)
    }

    static func resolve(_ tool: String) -> URL? {
        Command.executablePath(of: tool).map { URL(fileURLWithPath: $0) }
    }

    /// The digest of a list of (name, digest) pairs: one entry for many files (a module set).
    static func combined(_ entries: [(String, String)]) -> String {
        Digest.string(entries.map { "\($0.0) \($0.1)\n" }.joined())
    }
}
