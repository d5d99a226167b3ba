import BlockCore
import CNBDKit
import Exposure
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// The Swift half of BootLab's nbdkit *filter* (the C half: CNBDKit/filter.c). `bootlab serve`
// runs `nbdkit --filter=libbootlab-nbdkit.so PLUGIN ARG… bootlab-file=PLUGINFILE …` when the
// plugin file's source is that nbdkit plugin: the filter serves exactly what BootLab's plugin
// serves (the same configuration, prefixed `bootlab-`, the same `configComplete`, the same
// layer stack), except that the bottom of the stack reads the plugin below through nbdkit's
// `next->pread` (`FilterSource`) instead of starting a second nbdkit and reading it over NBD.

@_cdecl("bl_swift_filter_config_complete")
public func bl_swift_filter_config_complete() -> Int32 {
    let c = config.current
    guard let file = c.file else {
        bl_nbdkit_error("bootlab: bootlab-file=PATH is required", 22)
        return -1
    }
    do {
        // The plugin below must be the one the pointer records, with its arguments: a filter
        // put on any other plugin would serve another source's bytes under this pointer (the
        // identity check would catch different bytes; this catches a different command first).
        let (pointer, _) = try PluginPointer.read(pluginPath: file)
        guard let record = pointer.source, record.spec.kind == .nbdkit else {
            throw FilterError.notAnNbdkitSource(file: file, source: pointer.source?.spec.description)
        }
        let directory = PluginFile.directory(of: PluginFile.absolutePath(file))
        let words = try ExternalSource.nbdkitPluginWords(record.spec, directory: directory)
        let passed = (0..<bl_filter_passed_count()).map {
            (String(cString: bl_filter_passed_key($0)), String(cString: bl_filter_passed_value($0)))
        }
        try FilterError.checkPassed(passed, expected: Array(words.dropFirst()), source: record.spec.description)
        _ = bl_filter_set_timeout(c.sourceTimeout ?? ExternalSource.defaultTimeout)
    } catch {
        return fail(error)
    }
    return configComplete(sourceOpener: { spec, _ in try FilterSource(name: spec.description) })
}

enum FilterError: Error, CustomStringConvertible {
    case notAnNbdkitSource(file: String, source: String?)
    case parametersDiffer(source: String, passed: [String], expected: [String])

    var description: String {
        switch self {
        case let .notAnNbdkitSource(file, source):
            return "\(file): BootLab's filter serves plugin files whose source is an nbdkit plugin; this one's is \(source ?? "a .bli backup") (serve it with BootLab's plugin: bootlab serve --no-filter)"
        case let .parametersDiffer(source, passed, expected):
            return "the plugin below BootLab's filter was given [\(passed.joined(separator: " "))], the pointer's source \(source) says [\(expected.joined(separator: " "))]; nothing is served"
        }
    }

    /// nbdkit passes a bare word as the plugin's magic key (`script=./reader.py`): compare its value.
    static func checkPassed(_ passed: [(String, String)], expected: [String], source: String) throws {
        let ok = passed.count == expected.count && zip(passed, expected).allSatisfy { p, e in
            e.contains("=") ? "\(p.0)=\(p.1)" == e : p.1 == e
        }
        guard ok else {
            throw parametersDiffer(source: source, passed: passed.map { "\($0.0)=\($0.1)" }, expected: expected)
        }
    }
}

/// The source as the plugin below the filter serves it: opened (nbdkit's shared next context)
/// at the first read of the source, read on the calling thread.
final class FilterSource: BlockSource, @unchecked Sendable {
    let name: String
    let size: UInt64
    /// A plugin is promised reads of at most 8 MiB (docs/plugin-protocol.md), as over NBD.
    static let maxRequest = 8 << 20

    init(name: String) throws {
        self.name = name
        guard bl_filter_source_open() == 0 else {
            throw SourceError.connect(source: name, reason: "the nbdkit plugin below BootLab's filter failed to open (its error is in nbdkit's log above)")
        }
        let n = bl_filter_source_size()
        guard n >= 0 else { throw SourceError.connect(source: name, reason: "the nbdkit plugin below BootLab's filter has no size") }
        size = UInt64(n)
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        var done = 0
        while done < buffer.count {
            let n = min(Self.maxRequest, buffer.count - done)
            var err: Int32 = 0
            guard bl_filter_source_pread(buffer.baseAddress! + done, UInt32(n), offset + UInt64(done), &err) == 0 else {
                throw SourceError.read(source: name, offset: offset + UInt64(done), length: n, reason: String(cString: strerror(err == 0 ? EIO : err)))
            }
            done += n
        }
    }
}
