import Exposure

// libFuzzer harness for the plugin pointer's decoder (versions 1–3: the external source's
// argv and identity; a volume set's members) and the source-spec parser (ci/test.d/75-user-sources.sh). A pointer that
// decodes must also survive the opener's confinement check and the identity's sample plan.
@_cdecl("LLVMFuzzerTestOneInput") public func f(_ p: UnsafeRawPointer, _ n: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: p, count: n))
    if let pointer = try? PluginPointer.decode(bytes), let source = pointer.source {
        _ = try? source.spec.checkConfinement(pluginDirectory: "/nonexistent/bootlab-fuzz", allowOutside: false, allowedPlugins: ["python"])
        let id = source.identity
        _ = SourceIdentity.samplePositions(size: id.size, count: id.sampleCount, length: id.sampleLength)
        _ = id.digestBytes
    }
    if let pointer = try? PluginPointer.decode(bytes), let set = pointer.backupSet {
        _ = set.identity
        _ = try? DiskComposer.compose(volume: nil, members: [:], composition: pointer.composition)
    }
    if let text = String(validating: bytes, as: UTF8.self) {
        _ = try? BackupSourceSpec(parsing: text)
        _ = try? BackupSourceSpec(words: text.split(separator: "\n").map(String.init))
    }
    return 0
}
