import BlockCore
import Foundation

/// A backup source other than a `.bli` image, as an argv array (never a shell string): what
/// `bootlab expose --source SPEC` reads and the plugin pointer records (docs/bring-your-own-format.md).
///
/// | kind       | argv                         | read through |
/// |------------|------------------------------|--------------|
/// | `nbdkit`   | `[PLUGIN, ARG…]`             | `nbdkit PLUGIN ARG…` started on a private Unix socket, read over NBD |
/// | `nbd`      | `[URI]`                      | an NBD export someone else serves (`nbd+unix:///x?socket=…`, `nbd://host:port/x`) |
/// | `image`    | `[PATH]`                     | our own reader for the image's format (qcow2, VMDK, VHD, VHDX, VDI; raw when none matches) |
/// | `qemu-nbd` | `[PATH]` or `[PATH, FORMAT]` | `qemu-nbd --read-only` on a private socket (any format qemu reads) |
///
/// Paths (a plugin program, its files, an image) are kept relative to the plugin file's directory
/// when they lie inside its tree; the server runs in that directory.
public struct BackupSourceSpec: Codable, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case nbdkit
        case nbd
        case image
        case qemuNBD = "qemu-nbd"
    }

    public var kind: Kind
    public var argv: [String]

    public init(kind: Kind, argv: [String]) {
        self.kind = kind
        self.argv = argv
    }

    public var description: String { "\(kind.rawValue):" + argv.joined(separator: ":") }

    /// Parses `--source`: `nbdkit:PLUGIN[:ARG…]`, `qemu-nbd:PATH[:FORMAT]`, `image:PATH`, an NBD
    /// URI, or a plain path (an image). An argv array given as separate words (a scenario's
    /// `source:` list) uses `init(words:)`.
    public init(parsing text: String) throws {
        if text.hasPrefix("nbd://") || text.hasPrefix("nbd+unix://") || text.hasPrefix("nbds://") || text.hasPrefix("nbds+unix://") {
            self.init(kind: .nbd, argv: [text])
        } else if text.hasPrefix("nbdkit:") {
            let parts = text.dropFirst("nbdkit:".count).split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            self.init(kind: .nbdkit, argv: parts)
        } else if text.hasPrefix("qemu-nbd:") {
            let parts = text.dropFirst("qemu-nbd:".count).split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            self.init(kind: .qemuNBD, argv: parts)
        } else if text.hasPrefix("image:") {
            self.init(kind: .image, argv: [String(text.dropFirst("image:".count))])
        } else {
            self.init(kind: .image, argv: [text])
        }
        try validate(spec: text)
    }

    /// A source as argv words: `["nbdkit", PLUGIN, ARG…]`, `["qemu-nbd", PATH]`, `["nbd", URI]`,
    /// `["image", PATH]`, or `[PATH]` / `[URI]` alone.
    public init(words: [String]) throws {
        guard let first = words.first else { throw SourceError.badSpec(spec: "[]", reason: "an empty source") }
        if let kind = Kind(rawValue: first), words.count > 1 {
            self.init(kind: kind, argv: Array(words.dropFirst()))
        } else if words.count == 1 {
            try self.init(parsing: first)
            return
        } else {
            throw SourceError.badSpec(spec: SourceError.show(words), reason: "the first word must be one of \(Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        try validate(spec: SourceError.show(words))
    }

    func validate(spec: String) throws {
        guard let first = argv.first, !first.isEmpty else { throw SourceError.badSpec(spec: spec, reason: "no \(kind == .nbdkit ? "plugin" : kind == .nbd ? "URI" : "path") given") }
        for a in argv where a.utf8.contains(0) { throw SourceError.badSpec(spec: spec, reason: "an argument holds a NUL byte") }
        switch kind {
        case .nbdkit:
            // nbdkit reads options before the plugin's name; after it, only key=value and the
            // plugin's magic parameter. An option there would be nbdkit's, not the plugin's.
            if let bad = argv.first(where: { $0.hasPrefix("-") }) {
                throw SourceError.badSpec(spec: spec, reason: "'\(bad)': nbdkit options cannot be given in a source (only the plugin and its arguments)")
            }
        case .nbd:
            guard argv.count == 1 else { throw SourceError.badSpec(spec: spec, reason: "an NBD source is one URI") }
            if first.hasPrefix("nbds") { throw SourceError.badSpec(spec: spec, reason: "TLS NBD URIs are not supported as sources yet") }
        case .image:
            guard argv.count == 1 else { throw SourceError.badSpec(spec: spec, reason: "an image source is one path") }
        case .qemuNBD:
            guard argv.count <= 2 else { throw SourceError.badSpec(spec: spec, reason: "qemu-nbd takes PATH[:FORMAT]") }
            if argv.count == 2, !argv[1].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) {
                throw SourceError.badSpec(spec: spec, reason: "'\(argv[1])' is not a format name")
            }
        }
    }

    // MARK: Paths

    /// Positions in `argv` that hold paths, and each path: the plugin program and any argument
    /// (or `key=value` value) that names a file — contains a "/", is "..", or exists relative
    /// to `base`.
    func pathArguments(base: String) -> [(index: Int, key: String?, path: String)] {
        var out: [(Int, String?, String)] = []
        for (i, a) in argv.enumerated() {
            switch kind {
            case .nbd: continue
            case .image, .qemuNBD:
                if i == 0 { out.append((0, nil, a)) }
            case .nbdkit:
                if i == 0 {
                    // A plugin is a name (nbdkit's own plugins: file, python, sh, …) unless it has a "/".
                    if a.contains("/") { out.append((0, nil, a)) }
                    continue
                }
                var key: String?, value = a
                if let eq = a.firstIndex(of: "="), !a[..<eq].contains("/") {
                    key = String(a[..<eq])
                    value = String(a[a.index(after: eq)...])
                }
                if value.isEmpty { continue }
                let joined = value.hasPrefix("/") ? value : base + "/" + value
                if value.contains("/") || value == ".." || FileManager.default.fileExists(atPath: joined) {
                    out.append((i, key, value))
                }
            }
        }
        return out
    }

    /// The spec as recorded in a plugin: every path rewritten relative to the plugin's directory
    /// (given relative to the working directory), refused outside the tree unless `allowOutside`
    /// (then absolute).
    func recorded(pluginDirectory: String, allowOutside: Bool) throws -> BackupSourceSpec {
        var out = self
        let cwd = FileManager.default.currentDirectoryPath
        for (i, key, path) in pathArguments(base: cwd) {
            let abs = path.hasPrefix("/") ? path : cwd + "/" + path
            let rel: String
            do {
                // The plugin program the user names at expose may live anywhere (an installed
                // reader): it is recorded absolute, and a mount/serve must allow it by path.
                let programOutside = i == 0 && kind == .nbdkit
                rel = try PluginFile.pointerPath(backup: abs, pluginDirectory: pluginDirectory, allowOutside: allowOutside || programOutside)
            } catch {
                throw SourceError.notAllowed(source: description, reason: "\(path) lies outside the plugin's directory tree (\(pluginDirectory)); move it inside or pass --allow-outside")
            }
            // "./x": nbdkit takes a plugin name without "/" for one of its own.
            let keep = (i == 0 && kind == .nbdkit && !rel.contains("/")) ? "./" + rel : rel
            out.argv[i] = key.map { "\($0)=\(keep)" } ?? keep
        }
        return out
    }

    /// What may run and be read, checked wherever a plugin's source is opened (mount, serve,
    /// convert, reconfigure): every path inside the plugin's tree (unless `allowOutside`), and a
    /// plugin named rather than given as a path on `allowedPlugins`.
    public func checkConfinement(pluginDirectory: String, allowOutside: Bool, allowedPlugins: Set<String>) throws {
        var allowedProgram = false
        if kind == .nbdkit, let plugin = argv.first {
            if !plugin.contains("/") {
                guard allowedPlugins.contains(plugin) else {
                    throw SourceError.notAllowed(source: description, reason: "it runs the nbdkit plugin '\(plugin)', which is neither a program inside the plugin's directory tree nor on the allow-list; if you trust this plugin file, pass --allow-source-plugin \(plugin)")
                }
            } else {
                // A program allowed by path (real paths compared: no symlink detour).
                let real = PluginFile.realPathOrSelf(plugin.hasPrefix("/") ? plugin : pluginDirectory + "/" + plugin)
                allowedProgram = allowedPlugins.contains { $0.contains("/") && PluginFile.realPathOrSelf($0) == real }
            }
        }
        for (index, _, path) in pathArguments(base: pluginDirectory) {
            if index == 0 && allowedProgram { continue }
            do {
                _ = try PluginFile.resolve(pointerPath: path, pluginDirectory: pluginDirectory, allowOutside: allowOutside)
            } catch {
                if kind == .nbdkit && index == 0 {
                    throw SourceError.notAllowed(source: description, reason: "the plugin program \(path) lies outside the plugin's directory tree (\(pluginDirectory)) and is not on the allow-list; if you trust this plugin file, pass --allow-source-plugin \(path)")
                }
                throw SourceError.notAllowed(source: description, reason: "the file \(path) lies outside the plugin's directory tree (\(pluginDirectory)); pass --allow-outside if you trust this plugin file")
            }
        }
    }
}
