import DiskFormats
import Foundation

/// The golden layout dump of a native file other than VHDX (which has its own, `VHDXLayout`):
/// what our reader finds in the file (`bootlab info`'s fields) and what QEMU's reader finds
/// (`qemu-img info`'s format-specific section), so a structure that changes shows in both.
public enum NativeLayout {
    /// Dumpers by QEMU driver name (the artefacts' `format`), for every registered format.
    public static var dumpers: [String: GoldenValidator.LayoutDumper] {
        var out: [String: GoldenValidator.LayoutDumper] = [:]
        for name in DiskFormatRegistry.names where name != "vhdx" {
            let format = LabDiskFormat(name: name)
            out[format.qemuDriver] = { dump(file: $0, format: format) }
        }
        return out
    }

    public static func dump(file: URL, format: LabDiskFormat) -> String {
        var lines: [String] = []
        do {
            let info = try format.driver.info(path: file.path)
            // The path varies with the cell's directory: not part of the layout.
            lines += info.fields.filter { $0.key != "path" }.map { "\($0.key): \($0.value.text)" }
        } catch {
            lines.append("bootlab reader: does not open: \(error)")
        }
        do {
            let r = try Shell.run("qemu-img", ["info", "--output=json", "-f", format.qemuDriver, file.path], check: false)
            if r.status == 0, let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] {
                lines.append("qemu-img: format \(obj["format"] ?? "?"), virtual size \(obj["virtual-size"] ?? "?")")
                if let specific = obj["format-specific"] {
                    let data = try JSONSerialization.data(withJSONObject: withoutDirectories(specific), options: [.sortedKeys])
                    lines.append("qemu-img format-specific: " + String(decoding: data, as: UTF8.self))
                }
            } else {
                lines.append("qemu-img: does not open (exit \(r.status))")
            }
        } catch {
            lines.append("qemu-img: \(error)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// QEMU names extent files by their full path (a VMDK's `extents[].filename`), which varies
    /// with the cell's directory: only the file's own name is part of the layout.
    static func withoutDirectories(_ json: Any) -> Any {
        switch json {
        case let d as [String: Any]:
            var out: [String: Any] = [:]
            for (k, v) in d {
                if k == "filename", let path = v as? String { out[k] = URL(fileURLWithPath: path).lastPathComponent } else { out[k] = withoutDirectories(v) }
            }
            return out
        case let a as [Any]:
            return a.map(withoutDirectories)
        default:
            return json
        }
    }
}
