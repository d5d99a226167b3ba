import BackupImage
import BlockCore
import CNBDKit
import Exposure
import Frontends
#if canImport(Glibc)
import Glibc
#endif

// The Swift half of BootLab's nbdkit plugin (the C half, CNBDKit/plugin.c, holds the plugin
// struct). nbdkit calls config/config_complete/get_ready on its main thread before serving, then
// open/pread/pwrite/... from many threads: the shared state is guarded by `Locked`.

struct Config: Sendable {
    var file: String?
    var raw = false
    var overlay: String?
    var stats: String?
    var passphraseFile: String?
    var vault: String?
    var allowOutside = false
    var allowedSourcePlugins: Set<String> = []
    var sourceTimeout: Double?
    var sourceID: String?
    var faults = FaultPlan.none
    /// `bootlab serve --materialize [--rate R]`: fill the replacement while serving through it.
    var materialize = false
    var materializeRate: UInt64?
}

let config = Locked(Config())
private let counters = SourceCounters(name: "source")
private let prepared = Locked<ExposedFile?>(nil)
/// Opened once, at the first connection (deferred open), shared by every connection.
private let served = Locked<(any BlockSource)?>(nil)
private let openLock = NSLockish()
private let reporter = Locked<StatsReporter?>(nil)

func fail(_ error: any Error) -> Int32 {
    bl_nbdkit_error("bootlab: \(error)", errnoCodeForPlugin(error))
    return -1
}

private func errnoCodeForPlugin(_ error: any Error) -> Int32 {
    if let e = error as? IOError { return e.errno }
    if case BlockSourceError.readOnly = error { return 30 } // EROFS
    return 5 // EIO
}

@_cdecl("bl_swift_config")
public func bl_swift_config(_ key: UnsafePointer<CChar>?, _ value: UnsafePointer<CChar>?) -> Int32 {
    let k = String(cString: key!), v = String(cString: value!)
    switch k {
    case "file": config.withLock { $0.file = v }
    case "raw": config.withLock { $0.raw = ["1", "true", "yes", "on"].contains(v.lowercased()) }
    case "overlay": config.withLock { $0.overlay = v.isEmpty ? nil : v }
    case "stats": config.withLock { $0.stats = v }
    // How plugin files are opened: the backup's passphrase (else $BOOTLAB_PASSPHRASE, inherited
    // from `bootlab serve`: see `servingPassphrase`), its vault, and whether it may lie outside
    // the plugin's tree.
    case "passphrase-file": config.withLock { $0.passphraseFile = v }
    case "vault": config.withLock { $0.vault = v }
    case "allow-outside": config.withLock { $0.allowOutside = ["1", "true", "yes", "on"].contains(v.lowercased()) }
    // External sources (docs/bring-your-own-format.md): the allow-list, the timeout, the expected ID.
    case "allow-source-plugin": config.withLock { _ = $0.allowedSourcePlugins.insert(v) }
    case "source-timeout":
        guard let t = Double(v), t > 0 else { bl_nbdkit_error("bootlab: source-timeout wants seconds", 22); return -1 }
        config.withLock { $0.sourceTimeout = t }
    case "source-id": config.withLock { $0.sourceID = v }
    case "materialize": config.withLock { $0.materialize = ["1", "true", "yes", "on"].contains(v.lowercased()) }
    case "materialize-rate":
        guard let r = UInt64(v) else { bl_nbdkit_error("bootlab: materialize-rate wants bytes per second", 22); return -1 }
        config.withLock { $0.materializeRate = r }
    // Lab fault tests only (`bootlab serve --inject-fault`): a malformed plan stops nbdkit here.
    case FaultPlan.optionName:
        do {
            let plan = try FaultPlan(parsing: v)
            config.withLock { $0.faults = plan }
        } catch {
            return fail(error)
        }
    default:
        bl_nbdkit_error("bootlab: unknown parameter '\(k)'", 22)
        return -1
    }
    return 0
}

@_cdecl("bl_swift_config_complete")
public func bl_swift_config_complete() -> Int32 {
    configComplete(sourceOpener: nil)
}

/// The plugin's configuration, once complete: the served file prepared (its size; the source
/// opens at the first payload read). `sourceOpener` replaces starting an external source's server
/// (the filter mode: FilterEntry.swift).
func configComplete(sourceOpener: (@Sendable (BackupSourceSpec, String) throws -> any BlockSource)?) -> Int32 {
    let c = config.current
    guard let file = c.file else {
        bl_nbdkit_error("bootlab: file=PATH is required", 22)
        return -1
    }
    do {
        var access = PluginFile.OpenOptions()
        // Resolved when the backup opens (the first payload read): an unencrypted backup never asks.
        access.passphrase = servingPassphrase(file: c.passphraseFile)
        access.vault = c.vault
        access.allowOutside = c.allowOutside
        access.allowedSourcePlugins = c.allowedSourcePlugins
        if let t = c.sourceTimeout { access.sourceTimeout = t }
        access.sourceID = c.sourceID
        access.faults = c.faults
        access.sourceOpener = sourceOpener
        // Size only: the source itself opens at the first connection.
        let spec = SourceSpec(path: file, raw: c.raw, overlayPath: c.overlay, faults: c.faults)
        var materializers: MaterializerSet?
        if c.materialize {
            var o = Materializer.Options()
            o.rateLimit = c.materializeRate
            materializers = MaterializerSet(options: o, writable: c.overlay != nil)
        }
        let p = try SourceOpener.prepare(spec, access: access, counters: counters, materializers: materializers)
        prepared.withLock { $0 = p }
        if let s = c.stats {
            let r = StatsReporter(path: s == "-" ? nil : s, counters: [counters])
            if let materializers { r.reportMaterializations { materializers.statuses } }
            reporter.withLock { $0 = r }
        }
        return 0
    } catch {
        return fail(error)
    }
}

/// Where the served backup's passphrase comes from inside nbdkit: `passphrase-file=` if given,
/// else `$BOOTLAB_PASSPHRASE` — how `bootlab serve` hands over a passphrase it read from the
/// environment or a terminal, and how reconfiguration hands it to its `serve --raw` child. Never a
/// terminal: nbdkit serves in the background, with nobody to ask. Nil when neither is given (an
/// unencrypted backup needs none; an encrypted one then fails to open with "a passphrase is
/// needed").
func servingPassphrase(file: String?) -> PassphraseSource? {
    if let file { return .file(file) }
    if getenv(PassphraseSource.defaultEnvironmentVariable) != nil { return .environment(PassphraseSource.defaultEnvironmentVariable) }
    return nil
}

@_cdecl("bl_swift_get_ready")
public func bl_swift_get_ready() -> Int32 {
    reporter.current?.watchSIGUSR1()
    reporter.current?.write()
    return 0
}

@_cdecl("bl_swift_open")
public func bl_swift_open(_ readonly: Int32) -> Int32 {
    do {
        _ = try source()
        return 0
    } catch {
        return fail(error)
    }
}

private func source() throws -> any BlockSource {
    if let s = served.current { return s }
    return try openLock.withLock {
        if let s = served.current { return s }
        guard let p = prepared.current else { throw FrontendError.notConfigured }
        let s = try p.open()
        served.withLock { $0 = s }
        return s
    }
}

@_cdecl("bl_swift_get_size")
public func bl_swift_get_size() -> Int64 {
    guard let p = prepared.current else { return -1 }
    return Int64(p.size)
}

@_cdecl("bl_swift_can_write")
public func bl_swift_can_write() -> Int32 {
    prepared.current?.writable == true ? 1 : 0
}

@_cdecl("bl_swift_pread")
public func bl_swift_pread(_ buf: UnsafeMutableRawPointer?, _ count: UInt32, _ offset: UInt64) -> Int32 {
    do {
        try source().read(at: offset, into: UnsafeMutableRawBufferPointer(start: buf, count: Int(count)))
        return 0
    } catch {
        return fail(error)
    }
}

@_cdecl("bl_swift_pwrite")
public func bl_swift_pwrite(_ buf: UnsafeRawPointer?, _ count: UInt32, _ offset: UInt64, _ fua: Int32) -> Int32 {
    do {
        guard let w = try source() as? any WritableBlockSource else { throw BlockSourceError.readOnly("served source") }
        try w.write(at: offset, from: UnsafeRawBufferPointer(start: buf, count: Int(count)))
        if fua != 0 { try w.flush() }
        return 0
    } catch {
        return fail(error)
    }
}

@_cdecl("bl_swift_flush")
public func bl_swift_flush() -> Int32 {
    do {
        try (source() as? any WritableBlockSource)?.flush()
        return 0
    } catch {
        return fail(error)
    }
}

@_cdecl("bl_swift_extents")
public func bl_swift_extents(_ count: UInt32, _ offset: UInt64, _ reqOne: Int32, _ extents: UnsafeMutableRawPointer?) -> Int32 {
    do {
        let s = try source()
        let end = min(offset + UInt64(count), s.size)
        var list = try s.extents(in: offset..<end)
        if reqOne != 0, let first = list.first { list = [first] }
        for e in list {
            let type: Int32 = e.kind == .data ? 0 : (e.kind == .absent ? 1 : 2)
            if bl_nbdkit_add_extent(extents, e.offset, e.length, type) != 0 { return -1 }
        }
        return 0
    } catch {
        return fail(error)
    }
}

@_cdecl("bl_swift_unload")
public func bl_swift_unload() {
    try? (served.current as? any WritableBlockSource)?.flush()
    reporter.current?.write()
}
