/// BootLab's version, as written into creator strings and reports.
public enum BootLabVersion {
    public static let string = "0.1.0"
    /// The creator string our files carry (VHDX file identifier, backup headers).
    public static var creator: String { "BootLab v\(string)" }
}
