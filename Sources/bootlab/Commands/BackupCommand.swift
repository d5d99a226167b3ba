import ArgumentParser
import BackupImage
import BlockCore
import Foundation

/// `bootlab backup …`: create, inspect, verify and restore `.bli` backup images, and manage vaults.
struct BackupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Create, inspect, verify and restore BootLab backup images (.bli).",
        subcommands: [Create.self, Info.self, Verify.self, Restore.self, Vault.self]
    )

    struct PassphraseOptions: ParsableArguments {
        @Option(name: .long, help: "Read the passphrase from this file (else $BOOTLAB_PASSPHRASE, else the terminal).")
        var passphraseFile: String?

        var source: PassphraseSource { .standard(file: passphraseFile) }
    }

    static func printJSON<T: Encodable>(_ value: T) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try enc.encode(value), as: UTF8.self))
    }

    static func fail(_ error: Error) -> ExitCode {
        writeStandardError("bootlab: \(error)\n")
        return ExitCode(1)
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Back up a raw disk image, volume image, block device or one partition.")
        @Argument(help: "Source: raw disk or volume image, or block device.") var source: String
        @Argument(help: "Output .bli file (must not exist); with several --partition, the volume set's manifest (its images are written beside it as NAME.pN.bli).") var output: String
        @Option(help: "Back up only partition N (1-based) of the source's MBR or GPT; repeat it to back up several partitions of one GPT disk as a volume set (docs/formats/gpt.md).") var partition: [Int] = []
        @Option(help: "Block size, 64K...4M (default 256K, or the parent's).") var blockSize: String?
        @Option(help: "zstd[:LEVEL] or none.") var compress: String = "zstd:3"
        @Flag(help: "Encrypt with AES-256-GCM (key from the passphrase by scrypt).") var encrypt = false
        @OptionGroup var passphrase: PassphraseOptions
        @Option(help: "scrypt cost as log2(N) (default 17; lower only for tests).") var scryptLogN: UInt8?
        @Option(help: "Parent image: store only blocks that differ from it.") var parent: String?
        @Option(help: "Store blocks in this deduplicating vault directory.") var vault: String?
        @Option(help: "Fixed image ID (GUID): makes the output reproducible.") var imageID: String?
        @Option(help: "Derive the image ID from this seed (reproducible output).") var seed: String?
        @Option(help: "Treat the source as 'disk' or 'volume' (default: detect).") var sourceKind: String?
        @Option(help: "A label stored in the header.") var label: String = ""
        @Option(help: "File-system hint (default: detected).") var fsHint: String?
        @Option(help: "Creation time to record, Unix seconds (no clock is read otherwise).") var created: UInt64?
        @Flag(name: .customShort("p"), help: "Show progress.") var progress = false
        @Flag(help: "Print the summary as JSON.") var json = false

        func run() throws {
            do {
                var o = BackupCreateOptions()
                o.partition = partition.count == 1 ? partition[0] : nil
                if let bs = blockSize { o.blockSize = UInt32(clamping: try ByteSize.parse(bs)) }
                let parts = compress.split(separator: ":")
                switch parts.first.map(String.init) {
                case "none": o.compression = .none
                case "zstd":
                    o.compression = .zstd
                    if parts.count > 1 {
                        guard let l = Int32(parts[1]), (-7...22).contains(l) else { throw ValidationError("zstd level must be -7...22") }
                        o.compressionLevel = l
                    }
                default: throw ValidationError("--compress takes zstd[:LEVEL] or none")
                }
                o.encrypt = encrypt
                if encrypt || parent != nil || vault != nil { o.passphrase = passphrase.source }
                if let n = scryptLogN { o.scrypt.log2N = n }
                o.parentPath = parent
                o.vaultDirectory = vault
                if let id = imageID {
                    guard let g = GUID(id) else { throw ValidationError("--image-id is not a GUID") }
                    o.imageID = g
                } else if let seed { o.imageID = BackupCreateOptions.imageID(seed: seed) }
                switch sourceKind {
                case nil: break
                case "disk": o.sourceKind = .disk
                case "volume": o.sourceKind = .volume
                default: throw ValidationError("--source-kind takes disk or volume")
                }
                o.label = label
                o.fileSystemHint = fsHint
                o.creationTime = created
                o.progress = progress
                if partition.count > 1 {
                    guard sourceKind == nil || sourceKind == "volume" else { throw ValidationError("a volume set holds volumes (--source-kind volume)") }
                    let set = try BackupSetWriter.create(sourcePath: source, manifestPath: output, partitions: partition, options: o)
                    if json { try BackupCommand.printJSON(set); return }
                    print("created volume set \(set.manifest): \(set.volumes.count) images")
                    for s in set.volumes {
                        print("  \(s.path): image \(s.imageID), \(ByteSize.format(s.virtualSize)) in \(s.blocks) blocks, file \(ByteSize.format(s.fileSize))")
                    }
                    return
                }
                let s = try BackupImageWriter.create(sourcePath: source, outputPath: output, options: o)
                if json { try BackupCommand.printJSON(s) } else {
                    print("created \(s.path): image \(s.imageID), \(ByteSize.format(s.virtualSize)) in \(s.blocks) blocks "
                          + "(\(s.localBlocks) stored, \(s.zeroBlocks) zero, \(s.inheritedBlocks) inherited, \(s.vaultBlocks) in vault, "
                          + "\(s.newVaultBlocks) new), file \(ByteSize.format(s.fileSize))")
                }
            } catch let e as ValidationError { throw e } catch { throw BackupCommand.fail(error) }
        }
    }

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a backup image's header (reads no data block, needs no passphrase).")
        @Argument var image: String
        @Flag var json = false

        func run() throws {
            do {
                let (h, digest) = try BackupImageReader.readHeader(path: image)
                let size = try RawFile(path: image).size
                let info = BackupImageInfo(header: h, digest: digest, fileSize: size)
                if json { try BackupCommand.printJSON(info); return }
                print("image: \(image)")
                print("format: BootLab backup image v\(info.version)")
                print("image id: \(info.imageID)")
                print("header digest: \(info.headerDigest)")
                if let p = info.parentID { print("parent: \(p) (\(info.parentPath ?? ""))") }
                if let v = info.vaultID { print("vault: \(v) (\(info.vaultPath ?? ""))") }
                print("virtual size: \(info.virtualSize) (\(ByteSize.format(info.virtualSize)))")
                print("block size: \(ByteSize.format(UInt64(info.blockSize))), blocks: \(info.blockCount)")
                print("compression: \(info.compression)\(info.compression == "zstd" ? ":\(info.compressionLevel)" : "")")
                print("encrypted: \(info.encrypted ? "yes (AES-256-GCM, scrypt log2N=\(info.scrypt!.log2N) r=\(info.scrypt!.r) p=\(info.scrypt!.p))" : "no")")
                print("source: \(info.sourceKind), partition scheme \(info.partitionScheme)\(info.partitionNumber.map { ", partition \($0)" } ?? "")")
                if let s = info.mbrDiskSignature { print("disk signature: \(s)") }
                if let g = info.gptDiskGUID { print("disk GUID: \(g)") }
                if let t = info.mbrPartitionType { print("partition type: \(t)") }
                if let t = info.gptPartitionType { print("partition type GUID: \(t)") }
                if let g = info.gptPartitionGUID { print("partition unique GUID: \(g)") }
                if let a = info.gptAttributes { print("partition attributes: \(a)") }
                if let n = info.gptPartitionName { print("partition name: \(n)") }
                if let c = info.gptEntryCount { print("GPT entries: \(c)") }
                if info.sourceKind == "volume" {
                    print("partition start LBA: \(info.partitionStartLBA), size \(info.partitionSizeBytes), bootable \(info.bootable)")
                }
                print("logical sector size: \(info.logicalSectorSize)")
                if !info.fileSystemHint.isEmpty { print("file system: \(info.fileSystemHint)") }
                if !info.label.isEmpty { print("label: \(info.label)") }
                if let t = info.creationTime { print("created: \(t) (Unix seconds)") }
                print("file size: \(size)")
            } catch { throw BackupCommand.fail(error) }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Decode and check every block. Exit 0 clean, 2 corrupt, 1 could not check.")
        @Argument var image: String
        @OptionGroup var passphrase: PassphraseOptions
        @Option(help: "Vault directory (default: the path recorded in the image).") var vault: String?
        @Flag(name: .customShort("p"), help: "Show progress.") var progress = false
        @Flag var json = false

        func run() throws {
            let r = BackupImageReader.verify(path: image, passphrase: passphrase.source, vault: vault, progress: progress)
            if json { try BackupCommand.printJSON(r) } else if r.isClean {
                print("\(image): clean (\(r.imagesChecked) image(s), \(r.blocksChecked) blocks checked)")
            } else {
                for f in r.findings { print("\(f.severity == .corrupt ? "corrupt" : "could not check"): \(f.message)") }
                print("\(image): \(r.findings.count) problem(s)")
            }
            if r.exitCode != 0 { throw ExitCode(r.exitCode) }
        }
    }

    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write the backed-up bytes to a raw file (sparse where zero).")
        @Argument var image: String
        @Argument var output: String
        @OptionGroup var passphrase: PassphraseOptions
        @Option(help: "Vault directory (default: the path recorded in the image).") var vault: String?
        @Flag(name: .customShort("p"), help: "Show progress.") var progress = false

        func run() throws {
            do {
                let r = try BackupImageReader.open(path: image, passphrase: passphrase.source, vault: vault)
                try BackupRestore.restore(r, to: output, progress: progress)
            } catch { throw BackupCommand.fail(error) }
        }
    }

    struct Vault: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Inspect a deduplicating vault.", subcommands: [Stats.self, VerifyVault.self])

        struct Stats: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Stored versus referenced bytes and the dedup ratio.")
            @Argument var directory: String
            @Flag var json = false
            func run() throws {
                do {
                    // Statistics need no key: they count files and read the image records.
                    let v = try BackupVault.open(directory: directory, passphrase: nil, statisticsOnly: true)
                    let s = try v.statistics()
                    if json { try BackupCommand.printJSON(s); return }
                    print("vault \(s.vaultID) (\(s.encrypted ? "encrypted" : "plain")): \(s.images) image(s)")
                    print("stored: \(s.storedBlocks) blocks, \(s.storedBytes) bytes (\(ByteSize.format(s.storedBytes)))")
                    print("referenced: \(s.referencedBlocks) blocks, \(s.referencedBytes) bytes (\(ByteSize.format(s.referencedBytes)))")
                    print(String(format: "dedup ratio: %.2fx", s.dedupRatio))
                } catch { throw BackupCommand.fail(error) }
            }
        }

        struct VerifyVault: ParsableCommand {
            static let configuration = CommandConfiguration(commandName: "verify", abstract: "Decode every vault block and check its address. Exit 0/2/1.")
            @Argument var directory: String
            @OptionGroup var passphrase: PassphraseOptions
            @Flag var json = false
            func run() throws {
                let findings: [BackupFinding]
                do {
                    findings = try BackupVault.open(directory: directory, passphrase: passphrase.source).verify()
                } catch { writeStandardError("bootlab: \(error)\n"); throw ExitCode(1) }
                if json { try BackupCommand.printJSON(findings) } else {
                    for f in findings { print("corrupt: \(f.message)") }
                    print("\(directory): \(findings.isEmpty ? "clean" : "\(findings.count) problem(s)")")
                }
                if !findings.isEmpty { throw ExitCode(2) }
            }
        }
    }
}
