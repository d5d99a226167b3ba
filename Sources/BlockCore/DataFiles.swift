import Foundation

/// Where BootLab's data files are: the one resolver every command uses (docs/installing.md,
/// "Where BootLab finds its data"). The working directory is never searched: a `bootlab` run from
/// /tmp, or from inside some other project's tree, finds the same data as from anywhere else.
///
/// Order, first hit wins:
/// 1. the explicit flag (`--scenarios`, `--golden`, `--drivers`);
/// 2. the item's own environment variable (`BOOTLAB_SCENARIOS`, `BOOTLAB_GOLDEN`, `BOOTLAB_DRIVERS`,
///    `BOOTLAB_NBDKIT_PLUGIN`);
/// 3. `$BOOTLAB_DATA_DIR`, a data root laid out like the checkout (`Scenarios/`, `Golden/`);
/// 4. the source checkout the binary was built in (an executable under `<repo>/.build/…`);
/// 5. the install prefix: `<prefix>/share/bootlab`, where `<prefix>` is the directory above the
///    executable's real directory (`/proc/self/exe`, symlinks resolved): `/usr/bin/bootlab` →
///    `/usr/share/bootlab`.
/// An explicit flag or variable that names a missing file is an error, not a fallthrough: the
/// user asked for that file.
public enum DataFiles {
    /// One kind of data file.
    public enum Item: String, Sendable, CaseIterable {
        /// The scenario directory (`*.yaml`, `targets/`, `drivers.json`).
        case scenarios
        /// The golden directory (one directory per scenario and target).
        case golden
        /// The driver data (`drivers.json`, in the scenario directory).
        case drivers

        /// Its path inside a data root (a checkout or `<prefix>/share/bootlab`).
        public var relativePath: String {
            switch self {
            case .scenarios: return "Scenarios"
            case .golden: return "Golden"
            case .drivers: return "Scenarios/drivers.json"
            }
        }

        /// The environment variable naming it directly.
        public var environmentVariable: String {
            switch self {
            case .scenarios: return "BOOTLAB_SCENARIOS"
            case .golden: return "BOOTLAB_GOLDEN"
            case .drivers: return "BOOTLAB_DRIVERS"
            }
        }

        /// The command-line flag naming it.
        public var flag: String {
            switch self {
            case .scenarios: return "--scenarios DIR"
            case .golden: return "--golden DIR"
            case .drivers: return "--drivers FILE"
            }
        }

        /// What a data root must hold for this item to count as found there.
        var probe: String {
            switch self {
            case .scenarios: return "Scenarios/targets"
            case .golden: return "Golden"
            case .drivers: return "Scenarios/drivers.json"
            }
        }
    }

    /// Where a found item came from.
    public enum Origin: String, Sendable, Codable {
        case flag, environment, dataDirectory, checkout, installPrefix
    }

    public struct Location: Sendable, Equatable {
        public var url: URL
        public var origin: Origin
        public var path: String { url.path }
    }

    /// The variable naming a whole data root.
    public static let dataDirectoryVariable = "BOOTLAB_DATA_DIR"

    /// The running executable's real path: `/proc/self/exe` (symlinks resolved), else argv[0].
    public static func executablePath() -> String {
        if let p = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return p }
        return URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
    }

    /// The checkout an executable was built in: the directory holding the `.build` component of its
    /// path (SwiftPM's default scratch path), if that directory has a `Package.swift`.
    public static func checkout(forExecutable exe: String) -> URL? {
        let parts = exe.split(separator: "/", omittingEmptySubsequences: false)
        guard let i = parts.lastIndex(of: ".build"), i > 0 else { return nil }
        let root = parts[..<i].joined(separator: "/")
        let url = URL(fileURLWithPath: root.isEmpty ? "/" : root)
        guard FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) else { return nil }
        return url
    }

    /// The install prefix of an executable: the directory above its own (`/usr/bin/bootlab` → `/usr`).
    public static func prefix(forExecutable exe: String) -> URL {
        URL(fileURLWithPath: exe).deletingLastPathComponent().deletingLastPathComponent()
    }

    /// The data roots searched after the item's flag and variable, in order, with their origins.
    public static func roots(environment: [String: String] = ProcessInfo.processInfo.environment,
                             executable: String = executablePath()) -> [(url: URL, origin: Origin)] {
        var roots: [(URL, Origin)] = []
        if let d = environment[dataDirectoryVariable], !d.isEmpty { roots.append((URL(fileURLWithPath: d), .dataDirectory)) }
        if let c = checkout(forExecutable: executable) { roots.append((c, .checkout)) }
        roots.append((prefix(forExecutable: executable).appendingPathComponent("share/bootlab"), .installPrefix))
        return roots
    }

    /// Finds `item`: `explicit` (a flag's value) first, then the order above. Throws
    /// `DataFileError.notFound` naming every place searched.
    public static func locate(_ item: Item, explicit: String? = nil,
                              environment: [String: String] = ProcessInfo.processInfo.environment,
                              executable: String = executablePath()) throws -> Location {
        let fm = FileManager.default
        if let explicit {
            let url = URL(fileURLWithPath: explicit)
            guard fm.fileExists(atPath: url.path) else {
                throw DataFileError.notFound(item: item.rawValue, searched: ["\(url.path) (given on the command line)"], hint: item.flag)
            }
            return Location(url: url, origin: .flag)
        }
        if let env = environment[item.environmentVariable], !env.isEmpty {
            let url = URL(fileURLWithPath: env)
            guard fm.fileExists(atPath: url.path) else {
                throw DataFileError.notFound(item: item.rawValue, searched: ["\(url.path) (from $\(item.environmentVariable))"], hint: item.flag)
            }
            return Location(url: url, origin: .environment)
        }
        var searched = ["$\(item.environmentVariable) (not set)"]
        for (root, origin) in roots(environment: environment, executable: executable) {
            let probe = root.appendingPathComponent(item.probe).path
            if fm.fileExists(atPath: probe) {
                return Location(url: root.appendingPathComponent(item.relativePath), origin: origin)
            }
            searched.append("\(root.appendingPathComponent(item.relativePath).path) (\(origin.description))")
        }
        if environment[dataDirectoryVariable].map({ $0.isEmpty }) ?? true {
            searched.insert("$\(dataDirectoryVariable) (not set)", at: 1)
        }
        throw DataFileError.notFound(item: item.rawValue, searched: searched, hint: item.flag)
    }
}

extension DataFiles.Origin: CustomStringConvertible {
    public var description: String {
        switch self {
        case .flag: return "command-line flag"
        case .environment: return "environment variable"
        case .dataDirectory: return "$\(DataFiles.dataDirectoryVariable)"
        case .checkout: return "the source checkout this bootlab was built in"
        case .installPrefix: return "the install prefix of this bootlab"
        }
    }
}

/// A data file BootLab needs and could not find.
public enum DataFileError: Error, CustomStringConvertible, Sendable, Equatable {
    /// `item` was in none of `searched` (each entry a path and why it was tried); `hint` is the
    /// flag that names it.
    case notFound(item: String, searched: [String], hint: String)
    /// A directory BootLab would write into belongs to the installation.
    case readOnlyInstallation(item: String, path: String, reason: String)

    public var description: String {
        switch self {
        case .notFound(let item, let searched, let hint):
            return "\(item): not found; searched, in order:\n" + searched.map { "  - \($0)" }.joined(separator: "\n")
                + "\n(pass \(hint), or set $\(DataFiles.dataDirectoryVariable) to a directory holding Scenarios/ and Golden/; see docs/installing.md)"
        case .readOnlyInstallation(let item, let path, let reason):
            return "\(item) \(path): \(reason)"
        }
    }
}
