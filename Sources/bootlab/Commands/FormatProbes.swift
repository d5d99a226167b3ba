import BackupImage
import BlockCore
import DiskFormats
import Exposure
import Foundation

/// `info` for backup images: the header only (no index, no block, no passphrase).
struct BackupImageInfoProbe: ImageInfoProbe {
    var formatName: String { "bootlab-backup-image" }
    func matches(head: [UInt8]) -> Bool { BackupImageReader.looksLikeBackupImage(firstBytes: head) }
    func info(path: String) throws -> ImageInfo {
        let (header, digest) = try BackupImageReader.readHeader(path: path)
        let size = try RawFile(path: path).size
        let fields = try infoFields(of: BackupImageInfo(header: header, digest: digest, fileSize: size))
        return ImageInfo(format: formatName, path: path, fields: fields.filter { $0.key != "format" })
    }
}

/// `info` for a volume set's manifest (docs/formats/gpt.md): validated, then shown as it is.
struct VolumeSetInfoProbe: ImageInfoProbe {
    var formatName: String { BackupSetManifest.formatName }
    func matches(head: [UInt8]) -> Bool {
        head.first { ![0x20, 0x09, 0x0A, 0x0D].contains($0) } == UInt8(ascii: "{")
            && String(decoding: head, as: UTF8.self).contains("\"\(BackupSetManifest.formatName)\"")
    }
    func info(path: String) throws -> ImageInfo {
        let manifest = try BackupSetManifest.read(path: path)
        return ImageInfo(format: formatName, path: path, fields: try infoFields(of: manifest).filter { $0.key != "format" })
    }
}

/// `info` of a plugin file (in any native format): the format's facts plus where the pointer leads.
enum PluginInfo {
    static func append(to info: inout ImageInfo, path: String) throws {
        guard PluginFile.isPlugin(path: path) else { return }
        // Describing, not serving: an external source is described from the pointer alone
        // (neither confined nor started); a backup's plugin is opened (checked) as before.
        let (pointer, _) = try PluginPointer.read(pluginPath: path)
        if pointer.source == nil {
            var o = PluginFile.OpenOptions()
            o.allowOutside = true
            _ = try PluginFile.open(pluginPath: path, options: o)
        }
        info.fields.append(InfoField("plugin", .object(try infoFields(of: pointer))))
    }
}

/// Any Encodable as info fields (keys sorted), through its JSON form.
func infoFields(of value: some Encodable) throws -> [InfoField] {
    let data = try JSONEncoder().encode(value)
    guard case let .object(fields) = infoValue(try JSONSerialization.jsonObject(with: data)) else { return [] }
    return fields
}

private func infoValue(_ json: Any) -> InfoValue {
    switch json {
    case let d as [String: Any]:
        return .object(d.keys.sorted().map { InfoField($0, infoValue(d[$0]!)) })
    case let a as [Any]:
        return .object(a.enumerated().map { InfoField(String($0.offset), infoValue($0.element)) })
    // JSONSerialization hands booleans back as a Bool-typed NSNumber; tell them from 0 and 1.
    case let b as Bool where "\(type(of: json))".contains("Bool"):
        return .bool(b)
    case let n as NSNumber:
        return n.int64Value >= 0 ? .integer(n.uint64Value) : .string(n.stringValue)
    case let s as String:
        return .string(s)
    default:
        return .null
    }
}
