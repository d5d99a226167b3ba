import ArgumentParser
import BlockCore
import BackupImage
import DiskFormats
import Exposure
#if canImport(Glibc)
import Glibc
#endif

extension DiskImageFormat: ExpressibleByArgument {
    public init?(argument: String) { self.init(rawValue: argument) }
    public static var allValueStrings: [String] { allNames }
}

/// `bootlab convert`: qemu-img-like conversion between raw and every registered native format.
/// Argument translation only; the work is `openDiskImage`, the format's `DiskFormatDriver` and
/// `SparseImageWriter`.
struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert a disk image (raw, any native format, backup image or plugin file → any native format or sparse raw).",
        discussion: """
        The input format is detected from the file's content, never its name; -f overrides it.
        Native output is the format's view written to disk (holes skipped), so the file is
        byte-identical to what the exposure layer serves; the format's signature is written last.
        Raw inputs whose size is not a multiple of the logical sector size are padded with zeros,
        as qemu-img does. Formats: \(DiskImageFormat.allNames.filter { $0 != "bli" }.joined(separator: ", ")).
        """
    )

    @Option(name: .customShort("f"), help: "Input format; detected by content when omitted.")
    var inputFormat: DiskImageFormat?

    @Option(name: .customShort("O"), help: "Output format (raw or a native format: vhdx, vmdk, vhd, qcow2, vdi).")
    var outputFormat: DiskImageFormat

    @Option(name: .customShort("o"), help: "Output options key=value[,key=value…] (qemu-img style): subformat, block_size / cluster_size / grain_size, logical_sector_size, seed, and the format's own keys (e.g. vmdk adapter_type).")
    var formatOptions: [String] = []

    @Argument(help: "Input image.") var input: String
    @Argument(help: "Output file (created or truncated).") var output: String

    @Option(name: .customLong("block-size"), help: "Payload unit (VHDX block, VMDK grain, qcow2 cluster, VHD/VDI block); default by format and size.")
    var blockSize: String?

    @Option(name: .customLong("sector-size"), help: "Logical sector size: 512 or 4096 where the format allows it (QEMU opens VHDX only with 512).")
    var sectorSize: UInt32?

    @Option(name: .customLong("physical-sector-size"), help: "VHDX physical sector size: 512 or 4096.")
    var physicalSectorSize: UInt32?

    @Option(name: .customLong("seed"), help: "32 hex digits from which the output's identifiers derive (default: derived from the input's size, extent map and first MiB).")
    var seed: String?

    @Option(name: .customLong("threads"), help: "Copy threads.") var threads: Int = 2

    @Flag(name: .customLong("sync"), help: "fdatasync before writing the format identifier and at the end (qemu-img convert does not by default).")
    var sync = false

    @Flag(name: .customShort("p"), help: "Show a progress bar (on a terminal).") var progress = false
    @Flag(name: .customLong("json"), help: "Print a JSON summary.") var json = false
    @OptionGroup var access: PluginAccessOptions

    func run() throws {
        do {
            try convert()
        } catch let error as ExitCode {
            throw error
        } catch {
            writeStandardError("bootlab convert: \(error)\n")
            throw ExitCode(1)
        }
    }

    /// `-o` and the long options as one `NativeFormatOptions`; a key given twice is an error.
    func nativeOptions() throws -> NativeFormatOptions {
        var keys: [String: String] = [:]
        for o in formatOptions.flatMap({ $0.split(separator: ",") }) {
            let kv = o.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { throw ValidationError("option '\(o)' is not key=value") }
            guard keys[kv[0]] == nil else { throw ValidationError("option '\(kv[0])' given twice") }
            keys[kv[0]] = kv[1]
        }
        func merge(_ key: String, _ value: String?) throws {
            guard let value else { return }
            if let old = keys[key], old != value { throw ValidationError("\(key) given twice (\(old), \(value))") }
            keys[key] = value
        }
        try merge("block_size", blockSize)
        try merge("logical_sector_size", sectorSize.map(String.init))
        try merge("physical_sector_size", physicalSectorSize.map(String.init))
        try merge("seed", seed)
        var o = NativeFormatOptions(subformat: keys["subformat"], keys: keys)
        if let s = keys["logical_sector_size"] {
            guard let v = UInt32(s) else { throw ValidationError("logical_sector_size \(s) is not a number") }
            o.logicalSectorSize = v
        }
        let units = ["block_size", "cluster_size", "grain_size"].compactMap { k in keys[k].map { (k, $0) } }
        guard units.count <= 1 else { throw ValidationError("give one of block_size, cluster_size, grain_size") }
        if let (_, u) = units.first { o.allocationUnit = try ByteSize.parse(u) }
        if let seed = keys["seed"] {
            guard let bytes = [UInt8](hex: seed), bytes.count == 16 else {
                throw ValidationError("seed takes exactly 32 hex digits")
            }
            o.seed = bytes
        }
        return o
    }

    private func convert() throws {
        guard outputFormat != .backupImage else {
            throw ValidationError("output format bli is not supported by convert (use bootlab backup)")
        }
        guard threads >= 1 && threads <= 64 else { throw ValidationError("--threads must be 1–64") }
        try refuseSameFile(input, output)
        var options = try nativeOptions()

        // A plugin file converted to its own format with default options is materialized as
        // is: the replacement file of the method, byte-identical to the stream the filters
        // serve, its pointer then marked materialized where the format keeps it (as `finalize`
        // does) so BootLab no longer takes the copy for a plugin. Any other conversion of a
        // plugin starts from its virtual disk (a file without a pointer).
        let plugin = PluginFile.isPlugin(path: input) && inputFormat != .raw
            ? try PluginFile.open(pluginPath: input, options: access.openOptions(plugins: [input])) : nil
        if let plugin, plugin.formatName == outputFormat.rawValue, options.keys.isEmpty {
            var o = SparseImageWriter.Options(threads: threads, sync: sync)
            o.deferredPrefix = outputFormat.driver?.signatureLength ?? 0
            if progress { o.progress = ProgressBar(total: try SparseImageWriter.dataBytes(of: plugin), label: "convert", enabled: true) }
            let stats = try SparseImageWriter.write(plugin, toPath: output, options: o)
            try Replacement.markMaterialized(path: output)
            if json {
                print("{\n  \"bytesWritten\": \(stats.writtenBytes),\n  \"input\": \(jsonValue(input)),\n  \"materialized\": true,\n  \"output\": \(jsonValue(output)),\n  \"outputFormat\": \(jsonValue(outputFormat.rawValue)),\n  \"outputSize\": \(plugin.size)\n}")
            }
            return
        }
        var source = try plugin?.virtualDisk() ?? openInput()
        let inputSize = source.size
        var padded: UInt64?
        var summary: [String: String] = ["input": input, "output": output, "outputFormat": outputFormat.rawValue]
        var writerOptions = SparseImageWriter.Options(threads: threads, sync: sync)
        let stats: SparseImageWriter.Stats
        var outputSize: UInt64 = source.size

        if let driver = outputFormat.driver {
            let sector = UInt64(options.logicalSectorSize)
            if sector > 0, inputSize % sector != 0 {
                source = PaddedSource.roundedUp(source, to: sector)
                padded = source.size
                if !json {
                    writeStandardError("bootlab convert: note: input size \(inputSize) is not a multiple of \(sector); padded with zeros to \(source.size), as qemu-img does\n")
                }
            }
            if options.keys["seed"] == nil { options.seed = try VHDXSynthesisOptions.contentSeed(for: source) }
            // What the exposed form would hold, for the summary (a compressed subformat's file differs).
            if let view = try? driver.view(of: source, options: NativeFormatOptions(logicalSectorSize: options.logicalSectorSize,
                                                                                    allocationUnit: options.allocationUnit, seed: options.seed,
                                                                                    keys: options.keys.filter { $0.key != "subformat" })) {
                summary["allocationUnit"] = "\(view.allocationUnit)"
                summary["payloadStart"] = "\(view.payloadStart)"
                if options.subformat == nil || options.subformat == driver.subformats.first { outputSize = view.size }
            }
            if progress {
                writerOptions.progress = ProgressBar(total: try SparseImageWriter.dataBytes(of: source), label: "convert", enabled: true)
            }
            stats = try driver.convert(source, toPath: output, options: options, writer: writerOptions)
            if let s = try? RawFile(path: output).size { outputSize = s }
        } else {
            guard options.keys.isEmpty else { throw ValidationError("raw output takes no -o options") }
            writerOptions.skipZeroChunks = true
            if progress {
                writerOptions.progress = ProgressBar(total: try SparseImageWriter.dataBytes(of: source), label: "convert", enabled: true)
            }
            stats = try SparseImageWriter.write(source, toPath: output, options: writerOptions)
        }
        if json {
            summary["virtualSize"] = "\(source.size)"
            summary["inputSize"] = "\(inputSize)"
            if let padded { summary["paddedTo"] = "\(padded)" }
            summary["outputSize"] = "\(outputSize)"
            summary["bytesWritten"] = "\(stats.writtenBytes)"
            let body = summary.keys.sorted().map { "  \"\($0)\": \(jsonValue(summary[$0]!))" }.joined(separator: ",\n")
            print("{\n\(body)\n}")
        }
    }

    /// Backup images open through the backup reader (the lead's wiring of `openDiskImage`, which
    /// cannot depend on the backup module); everything else through `openDiskImage`.
    private func openInput() throws -> any BlockSource {
        let format = try inputFormat ?? detectFormat(path: input)
        let o = try access.openOptions(plugins: [])
        // Plugin files resolve as VHDX parents too (children made by `create -b vm.vhdx`).
        if format == .vhdx { return try VHDXFile.open(path: input, parentResolver: ExposedImage.vhdxParentResolver(options: o)) }
        guard format == .backupImage else { return try openDiskImage(path: input, format: format) }
        let encrypted = try BackupImageReader.readHeader(path: input).header.isEncrypted
        return try BackupImageReader.open(path: input, passphrase: encrypted ? (o.passphrase ?? access.passphrase.source) : nil,
                                          vault: access.vault)
    }

    private func jsonValue(_ s: String) -> String {
        if !s.isEmpty, s.allSatisfy(\.isNumber) { return s }
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where c.value < 0x20:
                let h = String(c.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
            default: out.unicodeScalars.append(c)
            }
        }
        return out + "\""
    }

    /// Converting a file onto itself would truncate the input: the backup is read-only, always.
    private func refuseSameFile(_ a: String, _ b: String) throws {
        var sa = stat(), sb = stat()
        guard stat(a, &sa) == 0, stat(b, &sb) == 0 else { return }
        if sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino {
            throw ValidationError("output \(b) is the input file; refusing to overwrite it")
        }
    }
}
