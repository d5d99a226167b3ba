import BlockCore

/// Well-known partition type GUIDs (UEFI 2.10 table 5-7 for the ESP; the others as published by
/// their operating systems and listed by util-linux/gdisk), for `bootlab info` and for choosing
/// a type when a backup did not record one.
public enum GPTPartitionType {
    public static let efiSystem = GUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")!
    public static let biosBoot = GUID("21686148-6449-6E6F-744E-656564454649")!
    public static let microsoftReserved = GUID("E3C9E316-0B5C-4DB8-817D-F92DF00215AE")!
    public static let microsoftBasicData = GUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")!
    public static let windowsRecovery = GUID("DE94BBA4-06D1-4D40-A16A-BFD50179D6AC")!
    public static let linuxFileSystem = GUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")!
    public static let linuxSwap = GUID("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F")!
    public static let linuxLVM = GUID("E6D6D379-F507-44C2-A23C-238F2A3DF928")!
    public static let linuxRAID = GUID("A19D880F-05FC-4D3B-A006-743F0F84911E")!
    public static let linuxRootX86_64 = GUID("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")!
    public static let linuxHome = GUID("933AC7E1-2EB4-4F13-B844-0E14E2AEF915")!
    public static let linuxExtendedBoot = GUID("BC13C2FF-59E6-4262-A352-B275FD6F7172")!

    static let names: [GUID: String] = [
        efiSystem: "EFI System", biosBoot: "BIOS boot", microsoftReserved: "Microsoft reserved",
        microsoftBasicData: "Microsoft basic data", windowsRecovery: "Windows recovery environment",
        linuxFileSystem: "Linux filesystem", linuxSwap: "Linux swap", linuxLVM: "Linux LVM", linuxRAID: "Linux RAID",
        linuxRootX86_64: "Linux root (x86-64)", linuxHome: "Linux /home", linuxExtendedBoot: "Linux extended boot",
    ]

    /// A human name for `type`, or "unknown" (the GUID itself is always printed beside it).
    public static func name(of type: GUID) -> String { names[type] ?? "unknown" }

    /// The type to give a volume whose backup recorded none, from its file-system hint.
    public static func forFileSystemHint(_ hint: String) -> GUID {
        switch hint.lowercased() {
        case "ntfs", "exfat", "fat32", "fat16", "fat12", "fat", "vfat": return microsoftBasicData
        default: return linuxFileSystem
        }
    }
}
