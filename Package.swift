// swift-tools-version:6.0
// BootLab: expose an image backup to a hypervisor as a bootable native disk, and prove it.
import PackageDescription

let package = Package(
    name: "BootLab",
    products: [
        .executable(name: "bootlab", targets: ["bootlab"]),
        // The nbdkit plugin serving block sources over NBD (`bootlab serve` runs nbdkit with it).
        .library(name: "bootlab-nbdkit", type: .dynamic, targets: ["NBDKitPlugin"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.0"),
    ],
    targets: [
        // Thin extern "C" shim over Crypto++ (CRC-32C, SHA-256, AES-GCM, scrypt, HKDF).
        .target(name: "CCryptoShim", linkerSettings: [.linkedLibrary("cryptopp")]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd"),
        // zlib: VMDK streamOptimized grains (deflate) and compressed VMDK/qcow2 clusters (inflate).
        .systemLibrary(name: "CZlib", pkgConfig: "zlib"),
        // The one way to start another program (posix_spawn + pidfd): run-to-end with captured
        // output and a timeout, or spawn-and-keep. Every module and test target may depend on it.
        .target(name: "CProcessShim"),
        .target(name: "Processes", dependencies: ["CProcessShim"]),
        .testTarget(name: "ProcessesTests", dependencies: ["Processes"]),
        // What every test target shares: scratch directories, the tool runner and servers (over
        // Processes), the build's products, the .requiresFUSE/.requiresNBD skip traits.
        .target(name: "TestSupport", dependencies: ["Processes"], path: "Tests/TestSupport"),
        // The block-source protocol, raw files, checksums, typed errors, byte parsing helpers.
        .target(name: "BlockCore", dependencies: ["CCryptoShim"]),
        // Archive formats inside guests' file systems: the one newc cpio reader and writer, used by
        // the lab's initramfs generator and by reconfiguration's initramfs editor.
        .target(name: "Archives", dependencies: ["BlockCore"]),
        .testTarget(name: "ArchivesTests", dependencies: ["Archives", "BlockCore"]),
        // Native disk formats: VHDX (parser, synthesizer, writer, check), MBR/BPB, raw.
        .target(name: "DiskFormats", dependencies: ["BlockCore", "CZlib"]),
        // Our documented backup image format (.bli): writer, reader, chains, vault.
        .target(name: "BackupImage", dependencies: ["BlockCore", "DiskFormats", "CCryptoShim", "CZstd"]),
        .testTarget(name: "BlockCoreTests", dependencies: ["BlockCore"]),
        // The verification lab: scenarios, targets, generator, pipeline steps/validators, boot runner, reports.
        .target(name: "Lab", dependencies: ["Archives", "BlockCore", "DiskFormats", "BackupImage", "Exposure", "Processes", "Reconfigure", .product(name: "Yams", package: "Yams")]),
        .testTarget(name: "LabTests", dependencies: ["Lab", "Archives", "BlockCore", "DiskFormats", "Processes", "Reconfigure", "TestSupport"]),
        // libguestfs and libhivex, for OS reconfiguration.
        .systemLibrary(name: "CGuestfs", pkgConfig: "libguestfs"),
        .systemLibrary(name: "CHivex", pkgConfig: "hivex"),
        // OS reconfiguration: drivers, initramfs, fstab/boot loader, Windows hives, GRUB boot code
        // (sector 0 through DiskFormats' MBR parser: the one in the product).
        .target(name: "Reconfigure", dependencies: ["Archives", "BlockCore", "DiskFormats", "Processes", "CGuestfs", "CHivex"]),
        // libFuzzer harness for the initramfs cpio reader and modules.dep parser.
        .executableTarget(name: "FuzzCpio", dependencies: ["Archives", "Reconfigure"], path: "Sources/Fuzz/FuzzCpio"),
        .testTarget(name: "ReconfigureTests", dependencies: ["Reconfigure", "BlockCore", "Processes"], exclude: ["Fixtures"]),
        .testTarget(name: "BackupImageTests", dependencies: ["BackupImage", "BlockCore", "DiskFormats", "Processes"]),
        .testTarget(name: "DiskFormatsTests", dependencies: ["DiskFormats", "BlockCore", "Processes", "TestSupport"]),
        // libFuzzer harness for the backup-image and partition-table parsers (ci/test.d/21-fuzz-backup.sh).
        .executableTarget(name: "FuzzBackupImage", dependencies: ["BackupImage", "DiskFormats", "BlockCore"], path: "Sources/Fuzz/FuzzBackupImage"),
        // libFuzzer harness for the VHDX parser (build with --sanitize fuzzer).
        .executableTarget(name: "FuzzVHDX", dependencies: ["BlockCore", "DiskFormats"], path: "Sources/Fuzz/FuzzVHDX"),
        // libFuzzer harnesses for the other native formats (ci/test.d/20-fuzz-formats.sh).
        .executableTarget(name: "FuzzVMDK", dependencies: ["DiskFormats"], path: "Sources/Fuzz/FuzzVMDK"),
        .executableTarget(name: "FuzzQCOW2", dependencies: ["DiskFormats"], path: "Sources/Fuzz/FuzzQCOW2"),
        .executableTarget(name: "FuzzVHD", dependencies: ["DiskFormats"], path: "Sources/Fuzz/FuzzVHD"),
        .executableTarget(name: "FuzzVDI", dependencies: ["DiskFormats"], path: "Sources/Fuzz/FuzzVDI"),
        .executableTarget(name: "FuzzGPT", dependencies: ["DiskFormats"], path: "Sources/Fuzz/FuzzGPT"),
        // Backup benchmarks with ratios against zstd (ci/bench-backup).
        .executableTarget(name: "bootlab-bench-backup", dependencies: ["BackupImage", "BlockCore", "Processes"]),
        // Exposure: composed disk, plugin file (expose/open), write overlay, replacement file.
        // libnbd: the NBD client of external backup sources (nbdkit plugins, NBD exports, qemu-nbd).
        .systemLibrary(name: "CNBD", pkgConfig: "libnbd"),
        .target(name: "Exposure", dependencies: ["BlockCore", "DiskFormats", "BackupImage", "CNBD", "Processes"]),
        // libfuse3 through pkg-config (fuse3.pc gives its include directory and link flags).
        .systemLibrary(name: "CLibFuse3", pkgConfig: "fuse3"),
        // C glue over libfuse3 (its entry points are macros) plus the passthrough of backing files.
        .target(
            name: "CFuse3",
            dependencies: ["CLibFuse3"],
            cSettings: [.define("FUSE_USE_VERSION", to: "31"), .define("_FILE_OFFSET_BITS", to: "64")]
        ),
        // Filter front-ends: FUSE mount, NBD serving through nbdkit, the served-source opener.
        .target(name: "Frontends", dependencies: ["BlockCore", "Exposure", "CFuse3", "Processes"]),
        // nbdkit plugin: C plugin struct calling into Swift through @_cdecl entry points.
        .target(name: "CNBDKit"),
        .target(name: "NBDKitPlugin", dependencies: ["CNBDKit", "Frontends", "BlockCore", "BackupImage", "Exposure"]),
        .executableTarget(name: "FuzzOverlayJournal", dependencies: ["Exposure"], path: "Sources/Fuzz/FuzzOverlayJournal"),
        .executableTarget(name: "FuzzFillJournal", dependencies: ["Exposure"], path: "Sources/Fuzz/FuzzFillJournal"),
        // libFuzzer harness for the plugin pointer (external sources) and source specs (ci/test.d/75-user-sources.sh).
        .executableTarget(name: "FuzzPluginPointer", dependencies: ["Exposure"], path: "Sources/Fuzz/FuzzPluginPointer"),
        .testTarget(name: "ExposureTests", dependencies: ["Exposure", "BlockCore", "BackupImage", "DiskFormats", "Processes", "TestSupport"]),
        .testTarget(name: "FrontendsTests", dependencies: ["Frontends", "Exposure", "BlockCore", "BackupImage", "DiskFormats", "TestSupport"]),
        // Reconfiguration of a plugin's OS: the engine over the plugin's composed disk (served over
        // NBD by a `bootlab serve --raw` child), changes into the plugin's reconfiguration layer.
        .target(name: "PluginReconfigure", dependencies: ["BlockCore", "BackupImage", "Exposure", "Processes", "Reconfigure"]),
        // Reconfiguration of plugin files end to end: encrypted backups, the passphrase's sources, the child's failures.
        .testTarget(name: "PluginReconfigureTests", dependencies: ["PluginReconfigure", "Reconfigure", "Exposure", "BackupImage", "BlockCore", "Processes", "TestSupport"]),
        .executableTarget(
            name: "bootlab",
            dependencies: [
                "BlockCore", "DiskFormats", "BackupImage", "Exposure", "Frontends", "Fuzzer", "Lab", "Processes", "Reconfigure", "PluginReconfigure",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // `bootlab fuzz` (issue 17): structure-aware mutation of disk images (field maps, checksums
        // recomputed), runs of other programs or of our readers in-process, findings minimized.
        // Coverage/ holds the C edge counter linked into instrumented readers (ci/setup.d/fuzz.sh).
        .target(name: "Fuzzer", dependencies: ["BlockCore", "DiskFormats", "BackupImage", "Processes"], exclude: ["Coverage"]),
        .testTarget(name: "FuzzerTests", dependencies: ["Fuzzer", "BlockCore", "DiskFormats", "Processes", "TestSupport"]),
        // Benchmarks with ratios against named baselines (qemu-img, cat) on the same data.
        .executableTarget(name: "bootlab-bench", dependencies: ["BlockCore", "DiskFormats", "Processes"]),
    ],
    swiftLanguageModes: [.v6],
    cxxLanguageStandard: .cxx17
)
