import BackupImage
import BlockCore
import DiskFormats
import Foundation

/// Opens a `BackupSourceSpec` as a block source: the one family of non-`.bli` sources under the
/// layer stack (`LayerStack.openSource`). nbdkit and qemu-nbd sources start their server here,
/// on first use only (deferred open: `ExposedImage` calls this on the first payload read).
public enum ExternalSource {
    /// Default bound on starting a source's server, connecting, and each read.
    public static let defaultTimeout: Double = 60

    /// The opened source. `directory` is where relative paths in the spec live (the plugin's
    /// directory; the working directory at expose time) and where a server runs.
    public static func open(_ spec: BackupSourceSpec, directory: String, timeout: Double = defaultTimeout) throws -> any BlockSource {
        let name = spec.description
        switch spec.kind {
        case .nbdkit:
            let plugin = try nbdkitPluginWords(spec, directory: directory)
            let server = try SourceServer.start({ socket in
                ["nbdkit", "--foreground", "--exit-with-parent", "--readonly", "--unix", socket] + plugin
            }, workingDirectory: directory, timeout: timeout)
            return try NBDSource(uri: server.uri, name: name, timeout: timeout, server: server)
        case .nbd:
            return try NBDSource(uri: spec.argv[0], name: name, timeout: timeout)
        case .qemuNBD:
            let path = absolute(spec.argv[0], in: directory)
            try requireFile(path, spec: spec)
            let server = try SourceServer.start({ socket in
                ["qemu-nbd", "--read-only", "--persistent", "--shared=8", "--socket", socket]
                    + (spec.argv.count > 1 ? ["--format", spec.argv[1]] : []) + [path]
            }, workingDirectory: directory, timeout: timeout)
            return try NBDSource(uri: server.uri, name: name, timeout: timeout, server: server)
        case .image:
            let path = absolute(spec.argv[0], in: directory)
            try requireFile(path, spec: spec)
            if PluginFile.isPlugin(path: path) {
                throw SourceError.badSpec(spec: name, reason: "\(path) is itself a BootLab plugin file; expose its backup instead")
            }
            if (try? BackupImageReader.readHeader(path: path)) != nil {
                throw SourceError.badSpec(spec: name, reason: "\(path) is a BootLab backup image: expose it as BACKUP, not as --source")
            }
            // Our own reader when we have one for the format (detected by content), else raw.
            if let driver = try DiskFormatRegistry.detect(path: path) {
                return try driver.open(path: path)
            }
            return try RawFile(path: path)
        }
    }

    /// The words an nbdkit source puts after nbdkit's own options: the plugin (a script plugin's
    /// language first, see `scriptLanguage`) and its arguments. `bootlab serve`'s filter mode runs
    /// nbdkit with the same words, in `directory`.
    public static func nbdkitPluginWords(_ spec: BackupSourceSpec, directory: String) throws -> [String] {
        precondition(spec.kind == .nbdkit, "nbdkitPluginWords of a \(spec.kind) source")
        return try scriptLanguage(of: spec, directory: directory).map { [$0] + spec.argv } ?? spec.argv
    }

    /// A plugin given as a script path whose first line is `#!…nbdkit LANG` (nbdkit's convention
    /// for script plugins: `#!/usr/sbin/nbdkit python`, `#!/usr/bin/env -S nbdkit sh`) runs as
    /// `nbdkit LANG SCRIPT ARG…`: the language plugin is nbdkit's own, the program is the
    /// script inside the tree. Nil for a shared object or a name.
    static func scriptLanguage(of spec: BackupSourceSpec, directory: String) throws -> String? {
        guard let plugin = spec.argv.first, plugin.contains("/") else { return nil }
        let path = absolute(plugin, in: directory)
        try requireFile(path, spec: spec)
        let f = try RawFile(path: path)
        let head = try f.read(at: 0, count: Int(min(f.size, 256)))
        guard head.starts(with: Array("#!".utf8)) else { return nil }
        let line = String(decoding: head.prefix { $0 != 0x0A }.dropFirst(2), as: UTF8.self)
        let words = line.split(separator: " ").map(String.init)
        guard let at = words.firstIndex(where: { $0.split(separator: "/").last == "nbdkit" }), at + 1 < words.count else {
            throw SourceError.badSpec(spec: spec.description, reason: "\(plugin) is a script whose first line (#!\(line)) does not name `nbdkit LANGUAGE`; give the language plugin first (nbdkit:python:\(plugin), nbdkit:sh:\(plugin))")
        }
        let lang = words[at + 1]
        guard !lang.isEmpty, lang.allSatisfy({ $0.isLetter || $0.isNumber }) else {
            throw SourceError.badSpec(spec: spec.description, reason: "\(plugin): '\(lang)' is not an nbdkit language plugin name")
        }
        return lang
    }

    static func absolute(_ p: String, in directory: String) -> String {
        p.hasPrefix("/") ? p : directory + "/" + p
    }

    static func requireFile(_ path: String, spec: BackupSourceSpec) throws {
        guard FileManager.default.fileExists(atPath: path) else {
            throw SourceError.badSpec(spec: spec.description, reason: "\(path) does not exist")
        }
    }
}
