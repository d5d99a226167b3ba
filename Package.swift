// swift-tools-version:6.0
// BootLab: expose an image backup to a hypervisor as a bootable native disk, and prove it.
import PackageDescription

let package = Package(
    name: "BootLab",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "bootlab", targets: ["bootlab"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // Thin extern "C" shim over Crypto++ (CRC-32C, SHA-256, AES-GCM, scrypt, HKDF).
        .target(
            name: "CCryptoShim",
            cxxSettings: [.unsafeFlags(["-O2"])],
            linkerSettings: [.linkedLibrary("cryptopp")]
        ),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd"),
        // The block-source protocol, raw files, checksums, typed errors, byte parsing helpers.
        .target(name: "BlockCore", dependencies: ["CCryptoShim"]),
        // Native disk formats: VHDX (parser, synthesizer, writer, check), MBR/BPB, raw.
        .target(name: "DiskFormats", dependencies: ["BlockCore"]),
        // Our documented backup image format (.bli): writer, reader, chains, vault.
        .target(name: "BackupImage", dependencies: ["BlockCore", "CCryptoShim", "CZstd"]),
        .testTarget(name: "BlockCoreTests", dependencies: ["BlockCore"]),
        .testTarget(name: "DiskFormatsTests", dependencies: ["DiskFormats", "BlockCore"]),
        .executableTarget(
            name: "bootlab",
            dependencies: [
                "BlockCore", "DiskFormats", "BackupImage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Benchmarks with ratios against named baselines (qemu-img, cat) on the same data.
        .executableTarget(name: "bootlab-bench", dependencies: ["BlockCore", "DiskFormats"]),
    ],
    swiftLanguageModes: [.v6],
    cxxLanguageStandard: .cxx17
)
