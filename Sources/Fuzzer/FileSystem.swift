import Foundation

/// The few file operations the fuzzer needs, with typed errors.
enum FileSystem {
    static func temporaryDirectory(prefix: String) -> String {
        // Inputs are rewritten on every run: memory (/dev/shm) when there is one.
        let env = ProcessInfo.processInfo.environment
        let base = env["BOOTLAB_FUZZ_TMPDIR"] ?? (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : env["TMPDIR"] ?? "/tmp")
        var template = Array("\(base)/\(prefix)-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { p in
            guard let base = p.baseAddress, let r = mkdtemp(base) else { return "\(base)/\(prefix)-\(getpid())" }
            return String(cString: r)
        }
    }

    static func makeDirectory(_ path: String) throws(FuzzError) {
        do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
        catch { throw .file(path, reason: "cannot create directory: \(error.localizedDescription)") }
    }

    static func write(_ bytes: [UInt8], to path: String) throws(FuzzError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .file(path, reason: "cannot create: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, $0.count - done) }
            guard n > 0 else { throw .file(path, reason: "write failed: \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    static func write(_ text: String, to path: String) throws(FuzzError) { try write(Array(text.utf8), to: path) }

    static func read(_ path: String) throws(FuzzError) -> [UInt8] {
        guard let d = FileManager.default.contents(atPath: path) else { throw .file(path, reason: "cannot read") }
        return [UInt8](d)
    }

    static func readIfPresent(_ path: String) -> [UInt8]? { FileManager.default.contents(atPath: path).map { [UInt8]($0) } }

    static func list(_ dir: String) throws(FuzzError) -> [String] {
        do { return try FileManager.default.contentsOfDirectory(atPath: dir).sorted().map { "\(dir)/\($0)" } }
        catch { throw .file(dir, reason: "cannot list: \(error.localizedDescription)") }
    }

    static func isRegularFile(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && !isDir.boolValue
    }

    static func removeTree(_ path: String) { try? FileManager.default.removeItem(atPath: path) }
    static func remove(_ path: String) { unlink(path) }
}
