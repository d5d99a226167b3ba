import ArgumentParser
import BlockCore
import BackupImage
import DiskFormats
import Exposure
#if canImport(Glibc)
import Glibc
#endif

extension DiskImageFormat: ExpressibleByArgument {}

/// `bootlab convert`: qemu-img-like conversion between raw and VHDX. Argument translation only;
/// the work is `openDiskImage`, `VHDXView` and `SparseImageWriter`.
struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Convert a disk image (raw, VHDX, backup image or plugin file → VHDX or sparse raw).",
        discussion: """
        The input format is detected from the file's content, never its name; -f overrides it.
        VHDX output is the synthesizer's stream written to disk (holes skipped), so the file is
        byte-identical to what the exposure layer serves. Raw inputs whose size is not a multiple
        of the logical sector size are padded with zeros, as qemu-img does.
        """
    )

    @Option(name: .customShort("f"), help: "Input format (raw|vhdx); detected by content when omitted.")
    var inputFormat: DiskImageFormat?

    @Option(name: .customShort("O"), help: "Output format (raw|vhdx).")
    var outputFormat: DiskImageFormat

    @Argument(help: "Input image.") var input: String
    @Argument(help: "Output file (created or truncated).") var output: String

    @Option(name: .customLong("block-size"), help: "VHDX block size, 1M–256M, power of two (default by size, as qemu-img).")
    var blockSize: String?

    @Option(name: .customLong("sector-size"), help: "VHDX logical sector size: 512 or 4096 (QEMU opens only 512).")
    var sectorSize: UInt32 = 512

    @Option(name: .customLong("physical-sector-size"), help: "VHDX physical sector size: 512 or 4096.")
    var physicalSectorSize: UInt32 = 4096

    @Option(name: .customLong("seed"), help: "32 hex digits from which the VHDX GUIDs derive (default: derived from the input's size, extent map and first MiB).")
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

    private func convert() throws {
        guard outputFormat == .raw || outputFormat == .vhdx else {
            throw ValidationError("output format \(outputFormat.rawValue) is not supported by convert")
        }
        guard threads >= 1 && threads <= 64 else { throw ValidationError("--threads must be 1–64") }
        try refuseSameFile(input, output)

        // A plugin file converted to VHDX with default options is materialized as is: the
        // replacement file of the method, byte-identical to the stream the filters serve.
        let plugin = PluginFile.isPlugin(path: input) && inputFormat != .raw
            ? try PluginFile.open(pluginPath: input, options: access.openOptions(plugins: [input])) : nil
        if let plugin, outputFormat == .vhdx, blockSize == nil, seed == nil, sectorSize == 512 {
            var o = SparseImageWriter.Options(threads: threads, sync: sync)
            o.deferredPrefix = VHDX.fileSignature.count
            if progress { o.progress = ProgressBar(total: try SparseImageWriter.dataBytes(of: plugin), label: "convert", enabled: true) }
            let stats = try SparseImageWriter.write(plugin, toPath: output, options: o)
            if json {
                print("{\n  \"bytesWritten\": \(stats.writtenBytes),\n  \"input\": \(jsonValue(input)),\n  \"materialized\": true,\n  \"output\": \(jsonValue(output)),\n  \"outputSize\": \(plugin.size)\n}")
            }
            return
        }
        var source = try plugin?.virtualDisk() ?? openInput()
        let inputSize = source.size
        var padded: UInt64?
        var summary: [String: String] = ["input": input, "output": output, "outputFormat": outputFormat.rawValue]
        let toWrite: any BlockSource
        var writerOptions = SparseImageWriter.Options(threads: threads, sync: sync)

        switch outputFormat {
        case .vhdx:
            if inputSize % UInt64(sectorSize) != 0 {
                source = PaddedSource.roundedUp(source, to: UInt64(sectorSize))
                padded = source.size
                if !json {
                    writeStandardError("bootlab convert: note: input size \(inputSize) is not a multiple of \(sectorSize); padded with zeros to \(source.size), as qemu-img does\n")
                }
            }
            var options = VHDXSynthesisOptions(logicalSectorSize: sectorSize, physicalSectorSize: physicalSectorSize)
            if let blockSize {
                let b = try ByteSize.parse(blockSize)
                guard b <= UInt64(UInt32.max) else { throw VHDXSynthesisError.invalidBlockSize(UInt32.max) }
                options.blockSize = UInt32(b)
            }
            if let seed {
                guard let bytes = [UInt8](hex: seed), bytes.count == 16 else {
                    throw ValidationError("--seed takes exactly 32 hex digits")
                }
                options.seed = bytes
            } else {
                options.seed = try VHDXSynthesisOptions.contentSeed(for: source)
            }
            let view = try VHDXView(source: source, options: options)
            toWrite = view
            writerOptions.deferredPrefix = VHDX.fileSignature.count
            summary["blockSize"] = "\(view.blockSize)"
            summary["allocatedBlocks"] = "\(view.allocatedBlockCount)"
            summary["payloadStart"] = "\(view.payloadStart)"
            summary["virtualDiskID"] = "\(view.virtualDiskID)"
        default:
            toWrite = source
            writerOptions.skipZeroChunks = true
        }

        if progress {
            writerOptions.progress = ProgressBar(total: try SparseImageWriter.dataBytes(of: toWrite), label: "convert", enabled: true)
        }
        let stats = try SparseImageWriter.write(toWrite, toPath: output, options: writerOptions)
        if json {
            summary["virtualSize"] = "\(source.size)"
            summary["inputSize"] = "\(inputSize)"
            if let padded { summary["paddedTo"] = "\(padded)" }
            summary["outputSize"] = "\(toWrite.size)"
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
