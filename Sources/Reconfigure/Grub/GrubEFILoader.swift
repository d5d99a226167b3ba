import BlockCore
import DiskFormats
import Foundation
import Processes

public enum GrubEFIError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The volume carries no x86_64-efi modules (and the host's were not allowed).
    case noEFIModules(volume: String, looked: [String])
    /// The host's modules were allowed but are not installed.
    case noHostModules(String)

    public var description: String {
        switch self {
        case let .noEFIModules(volume, looked):
            return "GRUB EFI: the volume carries no x86_64-efi GRUB modules: looked for kernel.img and normal.mod in \(looked.joined(separator: " and ")) on \(volume); "
                + "install grub-efi-amd64-bin in the guest, or allow this host's modules (\(GrubEFILoader.hostModuleDirectory), Debian's grub-efi-amd64-bin) with --esp-loader-modules host"
        case .noHostModules(let why):
            return "GRUB EFI: --esp-loader-modules host, but this host has no usable \(GrubEFILoader.hostModuleDirectory) (install grub-efi-amd64-bin): \(why)"
        }
    }
}

/// A GRUB EFI boot loader (`BOOTX64.EFI`) for a Linux volume exposed without its EFI System
/// Partition, built the way the BIOS core image is (`GrubBootCode`): by the host's `grub-mkimage`
/// from the volume's **own** `x86_64-efi` modules, read from the volume's bytes (debugfs; never
/// mounted), with a small embedded config that finds the root file system by its UUID.
///
/// Embedded config (GRUB's rescue parser: one command per line):
///
///     search.fs_uuid <fs UUID> root
///     set prefix=($root)<module parent>          # /boot/grub, or /usr/lib/grub
///     normal ($root)/boot/grub/grub.cfg          # only when the modules are not next to grub.cfg
///
/// `$prefix/x86_64-efi/*.mod` then resolves on the volume itself, so whatever the volume's
/// grub.cfg `insmod`s loads from the same GRUB build. Modules built into the image: partition
/// maps, the file system, `search_fs_uuid`, `normal`, `configfile`, `linux`, `echo`, `test`,
/// `gzio` — enough to boot a kernel even when `$prefix` is unreachable.
public struct GrubEFILoader: Sendable, Equatable {
    public static let hostModuleDirectory = "/usr/lib/grub/x86_64-efi"

    public enum ModuleSource: String, Sendable, Codable { case volume, host }

    public var image: [UInt8]
    public var filesystemUUID: String
    public var configPath: String
    /// The directory the image was built from: on the volume, or the host's.
    public var moduleDirectory: String
    public var moduleSource: ModuleSource
    public var prefix: String
    public var embeddedConfig: String
    public var modules: [String]

    /// The ESP's files: the loader at the UEFI fallback path.
    public var espFiles: [FAT32Image.File] { [FAT32Image.File(path: "/EFI/BOOT/BOOTX64.EFI", bytes: image)] }

    static let baseModules = ["part_gpt", "part_msdos", "fat", "search_fs_uuid", "normal", "configfile", "linux", "echo", "test", "gzio"]

    /// From a raw ext2/3/4 volume image.
    public static func build(volumePath: String, allowHostModules: Bool = false, workDirectory: URL? = nil) throws -> GrubEFILoader {
        try GrubBootCode.withScratch(workDirectory) { work in
            try build(files: RawVolumeFiles(path: volumePath), allowHostModules: allowHostModules, work: work)
        }
    }

    /// From any block source holding the volume (a `RawFile` is read in place; anything else,
    /// e.g. a backup reader, is copied — data extents only — to a scratch file first).
    public static func build(volume: BlockSource, allowHostModules: Bool = false, workDirectory: URL? = nil) throws -> GrubEFILoader {
        if let raw = volume as? RawFile {
            return try build(volumePath: raw.path, allowHostModules: allowHostModules, workDirectory: workDirectory)
        }
        return try GrubBootCode.withScratch(workDirectory) { work in
            let copy = work.appendingPathComponent("volume.raw").path
            let out = try RawFile.create(path: copy, size: volume.size)
            for e in try volume.allExtents() where e.kind == .data {
                var off = e.offset
                while off < e.end {
                    let n = Int(min(e.end - off, 4 << 20))
                    try out.write(at: off, try volume.read(at: off, count: n))
                    off += UInt64(n)
                }
            }
            try out.flush()
            return try build(files: RawVolumeFiles(path: copy), allowHostModules: allowHostModules, work: work)
        }
    }

    static func build(files: GrubVolumeFiles, allowHostModules: Bool, work: URL) throws -> GrubEFILoader {
        guard let config = try BootConfig.grubPaths.first(where: { try files.isFile($0) }) else {
            throw GrubError.noGrubConfiguration("\(files.name) (looked for \(BootConfig.grubPaths.joined(separator: ", ")))")
        }
        let grubDir = (config as NSString).deletingLastPathComponent
        let candidates = [grubDir + "/x86_64-efi", "/usr/lib/grub/x86_64-efi"]
        let found = try candidates.first(where: { d in
            try ["kernel.img", "normal.mod", "moddep.lst"].allSatisfy { try files.isFile("\(d)/\($0)") }
        })
        let type = try files.filesystemType()
        guard let fsModule = GrubBootCode.fileSystemModule[type] else {
            throw GrubError.volume("\(files.name) is \(type.isEmpty ? "of unknown type" : type); a GRUB EFI loader is built for \(GrubBootCode.fileSystemModule.keys.sorted().joined(separator: ", "))")
        }
        let uuid = try files.filesystemUUID()
        guard !uuid.isEmpty, uuid.allSatisfy({ $0.isHexDigit || $0 == "-" }) else {
            throw GrubError.volume("\(files.name) has no usable file-system UUID ('\(uuid)')")
        }

        let modsDir: URL
        let source: ModuleSource
        let moduleDirectory: String
        var cfg = "search.fs_uuid \(uuid) root\n"
        if let found {
            modsDir = work.appendingPathComponent("x86_64-efi")
            try files.copyDirectory(found, to: modsDir)
            source = .volume
            moduleDirectory = found
            let parent = (found as NSString).deletingLastPathComponent
            cfg += "set prefix=($root)\(parent)\n"
            if parent != grubDir { cfg += "normal ($root)\(config)\n" }
        } else if allowHostModules {
            let host = URL(fileURLWithPath: hostModuleDirectory)
            for f in ["kernel.img", "normal.mod", "moddep.lst"] where !FileManager.default.fileExists(atPath: host.appendingPathComponent(f).path) {
                throw GrubEFIError.noHostModules("\(f) is missing")
            }
            modsDir = host
            source = .host
            moduleDirectory = hostModuleDirectory
            // The volume has no modules to load: everything the loader needs is built in, and
            // normal mode reads grub.cfg from the volume (its insmods of absent modules fail softly).
            cfg += "set prefix=($root)\(grubDir)\n"
        } else {
            throw GrubEFIError.noEFIModules(volume: files.name, looked: candidates)
        }
        let modules = Self.baseModules.filter { $0 != fsModule } + [fsModule]
        for m in modules where !FileManager.default.fileExists(atPath: modsDir.appendingPathComponent("\(m).mod").path) {
            throw GrubError.volume("\(source == .volume ? files.name + ":" : "")\(moduleDirectory) has no \(m).mod")
        }
        let cfgPath = work.appendingPathComponent("efi-load.cfg")
        try Data(cfg.utf8).write(to: cfgPath)
        let out = work.appendingPathComponent("BOOTX64.EFI")
        // The built-in prefix is only used if the embedded config cannot run; point it at the ESP.
        let prefix = "/EFI/BOOT"
        try Command(["grub-mkimage", "-O", "x86_64-efi", "-d", modsDir.path, "-c", cfgPath.path, "-p", prefix,
                     "-o", out.path] + modules).run()
        let image = [UInt8](try Data(contentsOf: out))
        // A PE32+ image: "MZ", then "PE\0\0" at e_lfanew (grub-mkimage writes nothing else).
        guard image.count > 0x40, image[0] == 0x4D, image[1] == 0x5A,
              Int(image.le32(0x3C)) + 4 <= image.count,
              Array(image[Int(image.le32(0x3C))..<Int(image.le32(0x3C)) + 4]) == [0x50, 0x45, 0, 0] else {
            throw GrubError.unexpectedImage("grub-mkimage -O x86_64-efi wrote \(image.count) bytes that are not a PE32+ image")
        }
        return GrubEFILoader(image: image, filesystemUUID: uuid, configPath: config, moduleDirectory: moduleDirectory,
                             moduleSource: source, prefix: prefix, embeddedConfig: cfg, modules: modules)
    }
}
