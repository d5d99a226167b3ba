import Foundation

/// Thin wrappers over `qemu-img`/`qemu-io` with `--image-opts`.
public enum QemuImg {
    public struct Info: Sendable { public var virtualSize: UInt64; public var format: String }

    public static func info(imageOptions: String) throws -> Info {
        let r = try Shell.run("qemu-img", ["info", "--output=json", "--image-opts", imageOptions])
        guard let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
              let size = (obj["virtual-size"] as? NSNumber)?.uint64Value else {
            throw LabError.tool("qemu-img info", reason: "unexpected output \(r.stdout.prefix(200))")
        }
        return Info(virtualSize: size, format: obj["format"] as? String ?? "?")
    }

    /// Bytes of the virtual disk, through `qemu-img dd` into a scratch file.
    public static func readBytes(imageOptions: String, offset: UInt64, count: Int, scratch: URL) throws -> [UInt8] {
        precondition(offset % 512 == 0 && count % 512 == 0, "sector-aligned reads")
        let out = scratch.appendingPathComponent("dd-\(offset)-\(count).bin")
        try? FileManager.default.removeItem(at: out)
        // qemu-img dd has no --image-opts: wrap the options in a json: pseudo-filename.
        try Shell.run("qemu-img", ["dd", "-O", "raw", "bs=512", "skip=\(offset / 512)", "count=\(count / 512)",
                                   "if=\(jsonFilename(imageOptions))", "of=\(out.path)"])
        defer { try? FileManager.default.removeItem(at: out) }
        return Array(try Data(contentsOf: out))
    }

    /// `a=b,c.d=e` → `json:{"a":"b","c":{"d":"e"}}` (values with commas are not expected here).
    public static func jsonFilename(_ options: String) -> String {
        var root: [String: Any] = [:]
        for pair in options.replacingOccurrences(of: ",,", with: "\u{1}").split(separator: ",") {
            let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).replacingOccurrences(of: "\u{1}", with: ",") }
            guard kv.count == 2 else { continue }
            let keys = kv[0].split(separator: ".").map(String.init)
            func insert(_ dict: inout [String: Any], _ keys: ArraySlice<String>, _ value: String) {
                guard let first = keys.first else { return }
                if keys.count == 1 { dict[first] = value; return }
                var child = dict[first] as? [String: Any] ?? [:]
                insert(&child, keys.dropFirst(), value)
                dict[first] = child
            }
            insert(&root, keys[...], kv[1])
        }
        let data = (try? JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])) ?? Data()
        return "json:" + String(decoding: data, as: UTF8.self)
    }

    /// Converts the virtual disk to a raw file (sparse).
    public static func convertToRaw(imageOptions: String, output: String) throws {
        try? FileManager.default.removeItem(atPath: output)
        try Shell.run("qemu-img", ["convert", "--image-opts", imageOptions, "-O", "raw", output])
    }
}
