import Testing
import Foundation
import TestSupport
import Processes
@testable import BackupImage
@testable import BlockCore
@testable import DiskFormats
@testable import Exposure

/// External backup sources (docs/bring-your-own-format.md): an nbdkit plugin (a shell script
/// inside the plugin's tree, run by nbdkit's sh plugin), images read through our readers, the
/// identity check, confinement, and bounded waits. Real nbdkit, real libnbd, qemu-img as the
/// independent reader.
private let bootCode = [UInt8](repeating: 0xB0, count: 440)
private let sourceTools = toolsMissing(["nbdkit", "qemu-img"])

/// A 6 MiB volume with data at both ends and in the middle; its first sector is zero (an ext
/// volume's boot block), so detection calls it a volume.
private func writeVolume(_ path: String, size: Int = 6 << 20) throws -> [UInt8] {
    var b = Bytes(seed: 16)
    var v = [UInt8](repeating: 0, count: size)
    v.put(b.bytes(512 << 10), at: 4096)
    v.put(b.bytes(64 << 10), at: size / 2)
    v.put(b.bytes(8192), at: size - 8192)
    let f = try RawFile.create(path: path, size: UInt64(size))
    try f.write(at: 0, v)
    try f.flush()
    return v
}

/// A script for nbdkit's sh plugin (`nbdkit sh SCRIPT`, which runs it per method) serving `file` read-only; `load` touches `marker` (the start is
/// recorded), and `pread` sleeps for ever when `hang` is set — a plugin that hangs.
/// `openMarker`, if given, is touched by `open` (the plugin's connection to its data is made).
private func writeShellPlugin(_ path: String, file: String, marker: String, openMarker: String? = nil, hangOnRead: Bool = false, failOnLoad: Bool = false) throws {
    let script = """
    #!/bin/sh
    case "$1" in
      load) touch '\(marker)' ;;
      config_complete) \(failOnLoad ? "echo 'vendor plugin: licence file missing' >&2; exit 1" : "exit 0") ;;
      open) \(openMarker.map { "touch '\($0)'; " } ?? "")echo handle ;;
      get_size) stat -L -c %s '\(file)' ;;
      pread) \(hangOnRead ? "sleep 30 ;;" : "dd if='\(file)' skip=$4 count=$3 iflag=skip_bytes,count_bytes status=none ;;")
      can_write) exit 3 ;;
      thread_model) echo serialize_all_requests ;;
      *) exit 2 ;;
    esac
    """
    try writeExecutable(path, script)
}

private func exposeOptions() -> PluginFile.ExposeOptions {
    var o = PluginFile.ExposeOptions()
    o.composer.bootCode = bootCode
    o.blockSize = 1 << 20
    o.source.timeout = 20
    return o
}

private let allowSh: PluginFile.OpenOptions = {
    var o = PluginFile.OpenOptions()
    o.allowedSourcePlugins = ["sh"]
    o.sourceTimeout = 20
    return o
}()

private func readWhole(_ s: any BlockSource) throws -> [UInt8] { try s.read(at: 0, count: Int(s.size)) }

@Suite(.requires(missing: sourceTools)) struct ExternalSourceTests {
    /// A plugin inside the tree: expose, then open — metadata without starting the source,
    /// payload starts it, and the served virtual disk is MBR + the volume at LBA 2048.
    @Test func nbdkitVolumeIsComposedAndOpenedOnFirstPayloadRead() throws {
        let s = Scratch()
        let plug = s.dir("plug")
        let volume = try writeVolume(plug + "/vol.img")
        let marker = s.file("started")
        try writeShellPlugin(plug + "/reader.sh", file: plug + "/vol.img", marker: marker)
        // Given absolute (as from another working directory), recorded relative to the plugin.
        let r = try PluginFile.exposeSource(try BackupSourceSpec(parsing: "nbdkit:sh:" + plug + "/reader.sh"), pluginPath: plug + "/vm.vhdx", options: exposeOptions())
        #expect(r.composition == "volume")
        #expect(r.partitionStartLBA == 2048)
        let (pointer, _) = try PluginPointer.read(pluginPath: plug + "/vm.vhdx")
        #expect(pointer.version == 2)
        #expect(pointer.source?.spec == BackupSourceSpec(kind: .nbdkit, argv: ["sh", "reader.sh"]))
        #expect(pointer.source?.identity.size == UInt64(volume.count))

        try FileManager.default.removeItem(atPath: marker)
        let image = try PluginFile.open(pluginPath: plug + "/vm.vhdx", options: allowSh)
        _ = try image.read(at: 0, count: Int(image.payloadStart))
        #expect(!FileManager.default.fileExists(atPath: marker), "metadata reads must not start the source")
        #expect(!image.backupOpened)
        let disk = try readWhole(ExposedImage.VirtualDisk(image))
        #expect(FileManager.default.fileExists(atPath: marker), "the first payload read starts the source")
        #expect(Array(disk[0..<440]) == bootCode)
        #expect(disk[510] == 0x55 && disk[511] == 0xAA)
        #expect(Array(disk[(2048 * 512)..<(2048 * 512 + volume.count)]) == volume)
    }

    /// Deferred open through the real front-end: `qemu-img info` on the served VHDX does not
    /// start the source; `qemu-img convert` then reads the volume back through nbdkit ▸ libnbd ▸
    /// composition ▸ VHDX view ▸ nbdkit ▸ QEMU's VHDX reader (`--no-filter`), or through nbdkit ▸
    /// BootLab's filter ▸ the source plugin below it in the same nbdkit (filter mode, the
    /// default). In filter mode the plugin is *loaded* when serve starts (nbdkit loads its plugin
    /// before serving); what is deferred to the first payload read is its `open`.
    @Test(.requiresNBD, arguments: [false, true]) func qemuImgInfoDoesNotStartTheSource(filter: Bool) throws {
        let s = Scratch()
        let plug = s.dir("plug")
        let volume = try writeVolume(plug + "/vol.img")
        let marker = s.file("started"), opened = s.file("opened")
        try writeShellPlugin(plug + "/reader.sh", file: plug + "/vol.img", marker: marker, openMarker: opened)
        _ = try PluginFile.exposeSource(BackupSourceSpec(kind: .nbdkit, argv: ["sh", plug + "/reader.sh"]), pluginPath: plug + "/vm.vhdx", options: exposeOptions())
        try FileManager.default.removeItem(atPath: marker)
        try FileManager.default.removeItem(atPath: opened)
        let socket = s.file("nbd.sock")
        let server = try Server(["serve", plug + "/vm.vhdx", "--socket", socket, "--source-timeout", "20", "--allow-source-plugin", "sh"] + (filter ? [] : ["--no-filter"]),
                                log: s.file("serve.log"))
        defer { server.stop() }
        #expect(waitFor { FileManager.default.fileExists(atPath: socket) }, "\(server.log)")
        #expect(try nbdkitCommandLine(of: server.pid).contains { $0.hasPrefix("--filter=") } == filter)
        let uri = "nbd+unix:///?socket=" + socket
        let info = try run("qemu-img", ["info", "-f", "vhdx", uri])
        #expect(info.status == 0, "\(info.stderr)")
        #expect(info.stdout.contains("virtual size"))
        if filter {
            #expect(FileManager.default.fileExists(atPath: marker), "filter mode: nbdkit loads the source plugin when serve starts")
        } else {
            #expect(!FileManager.default.fileExists(atPath: marker), "qemu-img info started the source")
        }
        #expect(!FileManager.default.fileExists(atPath: opened), "qemu-img info opened the source")
        let out = s.file("read.raw")
        let c = try run("qemu-img", ["convert", "-f", "vhdx", "-O", "raw", uri, out])
        #expect(c.status == 0, "\(c.stderr) \(server.log)")
        let got = try RawFile(path: out)
        #expect(try got.read(at: 2048 * 512, count: volume.count) == volume)
        #expect(FileManager.default.fileExists(atPath: marker))
        #expect(FileManager.default.fileExists(atPath: opened))
    }

    /// Size and sampled digests: a source changed since expose is refused with a clear error.
    @Test func aChangedSourceIsRefused() throws {
        let s = Scratch()
        let plug = s.dir("plug")
        _ = try writeVolume(plug + "/vol.img")
        try writeShellPlugin(plug + "/reader.sh", file: plug + "/vol.img", marker: s.file("started"))
        _ = try PluginFile.exposeSource(BackupSourceSpec(kind: .nbdkit, argv: ["sh", plug + "/reader.sh"]), pluginPath: plug + "/vm.vhdx", options: exposeOptions())

        // One byte inside a sampled range (the first sample starts at 0).
        let f = try RawFile(path: plug + "/vol.img", writable: true)
        try f.write(at: 5000, [0xEE])
        try f.flush()
        let changed = #expect(throws: SourceError.self) { _ = try ExposedImage.VirtualDisk(try PluginFile.open(pluginPath: plug + "/vm.vhdx", options: allowSh)).read(at: 0, count: 512) }
        #expect("\(changed!)".contains("changed since it was exposed"))
        #expect("\(changed!)".contains("sampled ranges"))

        try f.truncate(to: 7 << 20)
        let grown = #expect(throws: SourceError.self) { _ = try ExposedImage.VirtualDisk(try PluginFile.open(pluginPath: plug + "/vm.vhdx", options: allowSh)).read(at: 0, count: 512) }
        #expect("\(grown!)".contains("its size is 7340032 bytes, it was 6291456"))
    }

    /// `--verify-source`: the whole-source digest catches a change outside every sample.
    @Test func verifySourceCatchesWhatSamplingMisses() throws {
        let s = Scratch()
        let path = s.file("vol.img")
        _ = try writeVolume(path)
        var o = exposeOptions()
        o.source.verify = true
        _ = try PluginFile.exposeSource(BackupSourceSpec(kind: .image, argv: [path]), pluginPath: s.file("vm.vhdx"), options: o)
        let samples = SourceIdentity.samplePositions(size: 6 << 20, count: SourceIdentity.defaultSampleCount, length: SourceIdentity.defaultSampleLength)
        let gap = try #require((1..<samples.count).first { samples[$0].lowerBound > samples[$0 - 1].upperBound + 4096 })
        let hidden = samples[gap - 1].upperBound + 100
        let f = try RawFile(path: path, writable: true)
        try f.write(at: hidden, [0x42])
        try f.flush()
        // Sampling alone would not see it …
        let source = try RawFile(path: path)
        #expect(try SourceIdentity.sampleDigest(of: source, count: SourceIdentity.defaultSampleCount, length: SourceIdentity.defaultSampleLength)
                == (try PluginPointer.read(pluginPath: s.file("vm.vhdx")).0.source!.identity.sampleDigest))
        // … the whole digest does.
        let e = #expect(throws: SourceError.self) { _ = try ExposedImage.VirtualDisk(try PluginFile.open(pluginPath: s.file("vm.vhdx"))).read(at: 0, count: 512) }
        #expect("\(e!)".contains("whole content"))
    }

    /// A pointer edited to run another program is refused before anything runs: a program
    /// outside the tree, a named nbdkit plugin not on the allow-list; the allow-list admits it.
    @Test func aPointerEditedToRunSomethingElseIsRefused() throws {
        let s = Scratch()
        let plug = s.dir("plug")
        _ = try writeVolume(plug + "/vol.img")
        let marker = s.file("started")
        try writeShellPlugin(plug + "/reader.sh", file: plug + "/vol.img", marker: marker)
        _ = try PluginFile.exposeSource(BackupSourceSpec(kind: .nbdkit, argv: ["sh", plug + "/reader.sh"]), pluginPath: plug + "/vm.vhdx", options: exposeOptions())
        try FileManager.default.removeItem(atPath: marker)

        // The recorded pointer runs nbdkit's sh plugin: refused unless `sh` is on the allow-list.
        let named = #expect(throws: SourceError.self) { _ = try PluginFile.open(pluginPath: plug + "/vm.vhdx") }
        #expect("\(named!)".contains("nbdkit plugin 'sh'"))
        #expect("\(named!)".contains("--allow-source-plugin sh"))
        _ = try PluginFile.open(pluginPath: plug + "/vm.vhdx", options: allowSh)

        // Edited to run a script outside the tree: refused even with `sh` allowed.
        // (Same length: the pointer's item has a fixed size.)
        let evil = s.file("evl.sh")
        try writeShellPlugin(evil, file: plug + "/vol.img", marker: marker)
        try rewritePointer(plug + "/vm.vhdx", replacing: "\"reader.sh\"", with: "\"../evl.sh\"")
        let outside = #expect(throws: SourceError.self) { _ = try PluginFile.open(pluginPath: plug + "/vm.vhdx", options: allowSh) }
        #expect("\(outside!)".contains("../evl.sh lies outside the plugin's directory tree"))
        #expect(throws: SourceError.self) { _ = try ExposedImage.VirtualDisk(try PluginFile.open(pluginPath: plug + "/vm.vhdx", options: allowSh)).read(at: 0, count: 512) }

        // Edited to run another program by path (not a plugin name): outside the tree, refused.
        try rewritePointer(plug + "/vm.vhdx", replacing: "\"sh\",\"../evl.sh\"", with: "\"/bin/true\"")
        let program = #expect(throws: SourceError.self) { _ = try PluginFile.open(pluginPath: plug + "/vm.vhdx", options: allowSh) }
        #expect("\(program!)".contains("the plugin program /bin/true lies outside"))
        #expect(!FileManager.default.fileExists(atPath: marker), "a refused source must not have run")
    }

    /// A source command that fails says what it said; one that hangs at start or on a read is
    /// stopped after the timeout with a clear error — never a hang.
    @Test func failingAndHangingSourcesGetClearErrorsAndTimeouts() throws {
        let s = Scratch()
        let plug = s.dir("plug")
        _ = try writeVolume(plug + "/vol.img")
        try writeShellPlugin(plug + "/fails.sh", file: plug + "/vol.img", marker: s.file("m1"), failOnLoad: true)
        let failed = #expect(throws: SourceError.self) {
            _ = try ExternalSource.open(BackupSourceSpec(kind: .nbdkit, argv: ["sh", "./fails.sh"]), directory: plug, timeout: 20)
        }
        #expect("\(failed!)".contains("before serving"))
        #expect("\(failed!)".contains("licence file missing"))

        // Hangs on the first read: the read times out, the connection is dropped.
        try writeShellPlugin(plug + "/hangs.sh", file: plug + "/vol.img", marker: s.file("m2"), hangOnRead: true)
        let source = try ExternalSource.open(BackupSourceSpec(kind: .nbdkit, argv: ["sh", "./hangs.sh"]), directory: plug, timeout: 2)
        let start = NBDSource.now
        let hung = #expect(throws: SourceError.self) { _ = try source.read(at: 0, count: 4096) }
        #expect(NBDSource.now - start < 15)
        #expect("\(hung!)".contains("did not complete within 2 s"))
        #expect(throws: SourceError.self) { _ = try source.read(at: 0, count: 512) }

        // Hangs before serving (a plugin stuck in its start): stopped at the deadline.
        let slow = plug + "/slow.sh"
        try writeExecutable(slow, "#!/bin/sh\ncase \"$1\" in config_complete) sleep 30 ;; get_size) echo 512 ;; pread) exit 1 ;; *) exit 2 ;; esac\n")
        let t0 = NBDSource.now
        let stuck = #expect(throws: SourceError.self) {
            _ = try ExternalSource.open(BackupSourceSpec(kind: .nbdkit, argv: ["sh", "./slow.sh"]), directory: plug, timeout: 2)
        }
        #expect(NBDSource.now - t0 < 15)
        #expect("\(stuck!)".contains("did not start serving within 2 s"))
    }

    /// Images through our own readers: a qcow2 and a VMDK made by qemu-img from the same
    /// volume expose the same disk as the raw volume.
    @Test func qemuImgImagesReadThroughOurReaders() throws {
        let s = Scratch()
        let volume = try writeVolume(s.file("vol.raw"))
        for (format, ext) in [("qcow2", "qcow2"), ("vmdk", "vmdk")] {
            let img = s.file("vol.\(ext)")
            let c = try run("qemu-img", ["convert", "-f", "raw", "-O", format, s.file("vol.raw"), img])
            #expect(c.status == 0, "\(c.stderr)")
            let plugin = s.file("vm-\(ext).vhdx")
            let r = try PluginFile.exposeSource(try BackupSourceSpec(parsing: img), pluginPath: plugin, options: exposeOptions())
            #expect(r.composition == "volume")
            let disk = try readWhole(ExposedImage.VirtualDisk(try PluginFile.open(pluginPath: plugin)))
            #expect(Array(disk[(2048 * 512)..<(2048 * 512 + volume.count)]) == volume, "\(format)")
        }
    }

    @Test func specsParseAndRefuseNbdkitOptions() throws {
        #expect(try BackupSourceSpec(parsing: "nbdkit:python:script=./r.py:file=b.vbk") == BackupSourceSpec(kind: .nbdkit, argv: ["python", "script=./r.py", "file=b.vbk"]))
        #expect(try BackupSourceSpec(parsing: "nbd+unix:///x?socket=/tmp/s").kind == .nbd)
        #expect(try BackupSourceSpec(parsing: "disk.qcow2") == BackupSourceSpec(kind: .image, argv: ["disk.qcow2"]))
        #expect(try BackupSourceSpec(words: ["nbdkit", "./r.py", "file=x"]) == BackupSourceSpec(kind: .nbdkit, argv: ["./r.py", "file=x"]))
        #expect(throws: SourceError.self) { try BackupSourceSpec(parsing: "nbdkit:file:--filter=cow") }
        #expect(throws: SourceError.self) { try BackupSourceSpec(parsing: "nbdkit:") }
        // Sample positions: deterministic, first and last range included, inside the source.
        let p = SourceIdentity.samplePositions(size: 10_000_000, count: 64, length: 65536)
        #expect(p.count == 64 && p.first == 0..<65536 && p.last == (10_000_000 - 65536)..<10_000_000)
        #expect(SourceIdentity.samplePositions(size: 1000, count: 64, length: 65536) == [0..<1000])
    }

    /// Rewrites the pointer's JSON in place (new length and CRC-32C); the pointer's area has
    /// room for a few more bytes.
    fileprivate func rewritePointer(_ plugin: String, replacing old: String, with new: String) throws {
        let file = try RawFile(path: plugin, writable: true)
        let skeleton = try file.read(at: 0, count: Int(min(file.size, 4 << 20)))
        let magic = PluginPointer.magic
        let at = try #require(skeleton.indices.first { i in i + magic.count <= skeleton.count && Array(skeleton[i..<i + magic.count]) == magic })
        let n = Int(skeleton.le32(at + 8))
        let json = String(decoding: skeleton[(at + 16)..<(at + 16 + n)], as: UTF8.self)
        #expect(json.contains(old))
        let edited = Array(json.replacingOccurrences(of: old, with: new).utf8)
        var head: [UInt8] = []
        head.appendLE32(UInt32(edited.count))
        head.appendLE32(CRC32C.checksum(edited))
        try file.write(at: UInt64(at + 8), head)
        try file.write(at: UInt64(at + 16), edited + [UInt8](repeating: 0, count: max(0, n - edited.count)))
        try file.flush()
    }
}

/// argv of a running process (`/proc/PID/cmdline`).
private func commandLine(of pid: Int32) throws -> [String] {
    let data = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))
    return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
}

/// argv of `bootlab serve` once it has become nbdkit (it makes its socket, then execs nbdkit:
/// the socket alone does not say the exec happened).
private func nbdkitCommandLine(of pid: Int32) throws -> [String] {
    _ = waitFor { (try? commandLine(of: pid))?.first == "nbdkit" }
    return try commandLine(of: pid)
}

/// The processes whose parent is `pid`, with their argv[0] (from /proc).
private func children(of pid: Int32) -> [(pid: Int32, command: String)] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { name -> (Int32, String)? in
        guard let p = Int32(name), let status = try? String(contentsOfFile: "/proc/\(name)/status", encoding: .utf8) else { return nil }
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("PPid:") }),
              Int32(line.dropFirst("PPid:".count).trimmingCharacters(in: .whitespaces)) == pid else { return nil }
        return (p, (try? commandLine(of: p))?.first ?? "?")
    }
}

/// `bootlab serve` in filter mode (docs/bring-your-own-format.md, "Serving: one nbdkit"): a
/// plugin file over an nbdkit source is served by ONE nbdkit — the source plugin, BootLab's
/// filter on top — and serves the same bytes as the two-process path (`--no-filter`), with the
/// same confinement and identity checks.
@Suite(.requires(missing: toolsMissing(["nbdkit", "qemu-img", "nbdcopy"])), .requiresNBD) struct FilterServeTests {
    /// A volume-only exposure over nbdkit's `file` plugin: the raw disk served in filter mode is
    /// MBR + the volume at LBA 2048 and equals the two-process path's (nbdcopy, cmp); the VHDX
    /// served both ways compares equal under qemu-img (QEMU's own VHDX reader). The filter-mode
    /// server is one nbdkit with no child; the two-process server has its source's nbdkit child
    /// (the control: the process check does see a child when there is one).
    @Test func filterModeServesTheSameDiskInOneProcess() throws {
        let s = Scratch()
        let plug = s.dir("plug")
        let volume = try writeVolume(plug + "/vol.img")
        _ = try PluginFile.exposeSource(try BackupSourceSpec(parsing: "nbdkit:file:file=vol.img"), pluginPath: plug + "/vm.vhdx", options: exposeOptions())
        func serve(_ name: String, _ extra: [String]) throws -> (Server, String) {
            let socket = s.file(name + ".sock")
            let server = try Server(["serve", plug + "/vm.vhdx", "--socket", socket, "--allow-source-plugin", "file"] + extra, log: s.file(name + ".log"))
            #expect(waitFor { FileManager.default.fileExists(atPath: socket) }, "\(server.log)")
            return (server, "nbd+unix:///?socket=" + socket)
        }
        let (filterRaw, filterRawURI) = try serve("filter-raw", ["--raw"])
        defer { filterRaw.stop() }
        let (twoRaw, twoRawURI) = try serve("two-raw", ["--raw", "--no-filter"])
        defer { twoRaw.stop() }
        let (filterVHDX, filterVHDXURI) = try serve("filter-vhdx", [])
        defer { filterVHDX.stop() }
        let (twoVHDX, twoVHDXURI) = try serve("two-vhdx", ["--no-filter"])
        defer { twoVHDX.stop() }

        let argv = try nbdkitCommandLine(of: filterRaw.pid)
        #expect(argv.first == "nbdkit" && argv.contains { $0.hasPrefix("--filter=") && $0.hasSuffix("libbootlab-nbdkit.so") }, "\(argv)")
        #expect(argv.contains("file=vol.img") && argv.contains("bootlab-raw=true"), "\(argv)")
        #expect(try !nbdkitCommandLine(of: twoRaw.pid).contains { $0.hasPrefix("--filter=") })

        let a = s.file("filter.raw"), b = s.file("two.raw")
        for (uri, out) in [(filterRawURI, a), (twoRawURI, b)] {
            let c = try run("nbdcopy", ["--no-extents", uri, out])
            #expect(c.status == 0, "\(c.stderr)")
        }
        let disk = try RawFile(path: a)
        #expect(try disk.read(at: 0, count: 440) == bootCode)
        #expect(try disk.read(at: 510, count: 2) == [0x55, 0xAA])
        #expect(try disk.read(at: 2048 * 512, count: volume.count) == volume)
        #expect(try run("cmp", [a, b]).status == 0, "filter mode and the two-process path serve different disks")
        let cmp = try run("qemu-img", ["compare", "-f", "vhdx", "-F", "vhdx", filterVHDXURI, twoVHDXURI])
        #expect(cmp.status == 0, "\(cmp.stdout) \(cmp.stderr)")
        let vsRaw = try run("qemu-img", ["compare", "-f", "vhdx", "-F", "raw", filterVHDXURI, a])
        #expect(vsRaw.status == 0, "\(vsRaw.stdout) \(vsRaw.stderr)")

        // Payload was read from every server: filter mode has no child process at all; the
        // two-process path runs its source in a child nbdkit.
        for server in [filterRaw, filterVHDX] {
            #expect(children(of: server.pid).isEmpty, "filter mode started \(children(of: server.pid))")
        }
        #expect(children(of: twoRaw.pid).contains { $0.command.hasSuffix("nbdkit") }, "the control: the two-process path's source child")
    }

    /// Writes in filter mode go to the write overlay (nbdkit runs without --readonly; the plugin
    /// below is still opened read-only): written, read back after a restart of the server, and
    /// the source file is unchanged.
    @Test func filterModeTakesWritesIntoTheOverlay() throws {
        let s = Scratch()
        let plug = s.dir("plug")
        let volume = try writeVolume(plug + "/vol.img")
        _ = try PluginFile.exposeSource(try BackupSourceSpec(parsing: "nbdkit:file:file=vol.img"), pluginPath: plug + "/vm.vhdx", options: exposeOptions())
        let overlay = s.file("overlay")
        for round in 0..<2 {
            let socket = s.file("w\(round).sock")
            let server = try Server(["serve", plug + "/vm.vhdx", "--raw", "--overlay", overlay, "--socket", socket, "--allow-source-plugin", "file"], log: s.file("w\(round).log"))
            #expect(waitFor { FileManager.default.fileExists(atPath: socket) }, "\(server.log)")
            #expect(try nbdkitCommandLine(of: server.pid).contains { $0.hasPrefix("--filter=") })
            let uri = "nbd+unix:///?socket=" + socket
            if round == 0 {
                let w = try run("qemu-io", ["-f", "raw", "-c", "write -P 0x5a 1200k 64k", uri])
                #expect(w.status == 0 && w.stdout.contains("wrote 65536/65536"), "\(w.stdout) \(w.stderr) \(server.log)")
            }
            let r = try run("qemu-io", ["-f", "raw", "-c", "read -P 0x5a 1200k 64k", uri])
            #expect(r.status == 0 && r.stdout.contains("read 65536/65536") && !r.stdout.contains("Pattern verification failed"), "round \(round): \(r.stdout) \(r.stderr)")
            // SIGTERM: nbdkit unloads, the overlay is flushed (the next round reads it back).
            server.stop()
        }
        #expect(try RawFile(path: plug + "/vol.img").read(at: 0, count: volume.count) == volume, "the source was written")
    }

    /// The refusals hold in filter mode: a plugin not on the allow-list (from `bootlab serve`,
    /// and from the filter itself when nbdkit is run by hand), a pointer edited to run a program
    /// outside the tree, a filter put over another plugin command than the pointer's, and a
    /// source changed since expose (refused at the first payload read: the client gets an I/O
    /// error, the log the reason, and no byte of the volume).
    @Test func filterModeRefusals() throws {
        let s = Scratch()
        let plug = s.dir("plug")
        _ = try writeVolume(plug + "/vol.img")
        _ = try PluginFile.exposeSource(try BackupSourceSpec(parsing: "nbdkit:file:file=vol.img"), pluginPath: plug + "/vm.vhdx", options: exposeOptions())
        let filterLibrary = productsDirectory + "/libbootlab-nbdkit.so"

        // Not on the allow-list: bootlab serve refuses before running anything.
        let refused = try run(bootlabPath, ["serve", plug + "/vm.vhdx", "--raw", "--socket", s.file("a.sock")], timeout: 30)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("runs the nbdkit plugin 'file'") && refused.stderr.contains("--allow-source-plugin file"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: s.file("a.sock")))
        // The same through nbdkit and the filter directly: the filter refuses at configuration.
        let direct = try run("env", ["-C", plug, "nbdkit", "--readonly", "--filter=" + filterLibrary, "file", "file=vol.img", "bootlab-file=" + plug + "/vm.vhdx", "bootlab-raw=true",
                                        "--run", "true"], timeout: 30)
        #expect(direct.status != 0)
        #expect(direct.stderr.contains("--allow-source-plugin file"), "\(direct.stderr)")
        // A filter over another command than the pointer's source (here: another file).
        try FileManager.default.copyItem(atPath: plug + "/vol.img", toPath: plug + "/other.img")
        let other = try run("env", ["-C", plug, "nbdkit", "--readonly", "--filter=" + filterLibrary, "file", "file=other.img", "bootlab-file=" + plug + "/vm.vhdx", "bootlab-raw=true",
                                       "bootlab-allow-source-plugin=file", "--run", "true"], timeout: 30)
        #expect(other.status != 0)
        #expect(other.stderr.contains("the plugin below BootLab's filter was given [file=other.img]"), "\(other.stderr)")

        // A changed source: one byte inside the first sampled range.
        let f = try RawFile(path: plug + "/vol.img", writable: true)
        try f.write(at: 5000, [0xEE])
        try f.flush()
        let socket = s.file("c.sock")
        let server = try Server(["serve", plug + "/vm.vhdx", "--raw", "--socket", socket, "--allow-source-plugin", "file"], log: s.file("c.log"))
        defer { server.stop() }
        #expect(waitFor { FileManager.default.fileExists(atPath: socket) }, "\(server.log)")
        #expect(try nbdkitCommandLine(of: server.pid).contains { $0.hasPrefix("--filter=") })
        let read = try run("nbdcopy", ["--no-extents", "nbd+unix:///?socket=" + socket, s.file("changed.raw")], timeout: 60)
        #expect(read.status != 0, "a changed source was served")
        #expect(waitFor { server.log.contains("changed since it was exposed") }, "\(server.log)")
    }

    /// Bounded in filter mode: a source plugin that fails at start ends serve with what it said;
    /// one stuck in its start, or in a read, is stopped by the filter's watchdog after
    /// `--source-timeout` with a clear error — the client's read fails, never hangs.
    @Test func filterModeFailingAndHangingSources() throws {
        let s = Scratch()
        let plug = s.dir("plug")
        _ = try writeVolume(plug + "/vol.img")
        func exposed(_ name: String, hangOnRead: Bool = false, failOnLoad: Bool = false, script: String? = nil) throws -> String {
            // Exposed from a good reader, then the reader is replaced (the same pointer).
            try writeShellPlugin(plug + "/\(name).sh", file: plug + "/vol.img", marker: s.file(name))
            _ = try PluginFile.exposeSource(BackupSourceSpec(kind: .nbdkit, argv: ["sh", plug + "/\(name).sh"]), pluginPath: plug + "/\(name).vhdx", options: exposeOptions())
            if let script { try writeExecutable(plug + "/\(name).sh", script) } else {
                try writeShellPlugin(plug + "/\(name).sh", file: plug + "/vol.img", marker: s.file(name), hangOnRead: hangOnRead, failOnLoad: failOnLoad)
            }
            return plug + "/\(name).vhdx"
        }
        func serve(_ plugin: String, _ name: String) throws -> (Server, String) {
            let socket = s.file(name + ".sock")
            let server = try Server(["serve", plugin, "--raw", "--socket", socket, "--allow-source-plugin", "sh", "--source-timeout", "2"], log: s.file(name + ".log"))
            return (server, "nbd+unix:///?socket=" + socket)
        }

        let (failing, _) = try serve(try exposed("fails", failOnLoad: true), "fails")
        #expect(waitFor(20) { !failing.isRunning }, "a source failing at start must end serve")
        #expect(failing.log.contains("licence file missing"), "\(failing.log)")

        let slow = try exposed("slow", script: "#!/bin/sh\ncase \"$1\" in config_complete) sleep 30 ;; get_size) echo 512 ;; pread) exit 1 ;; *) exit 2 ;; esac\n")
        let t0 = NBDSource.now
        let (stuck, _) = try serve(slow, "slow")
        #expect(waitFor(20) { !stuck.isRunning }, "a source stuck in its start must be stopped")
        #expect(NBDSource.now - t0 < 15)
        #expect(stuck.log.contains("did not start serving within 2 s"), "\(stuck.log)")

        let (hanging, uri) = try serve(try exposed("hangs", hangOnRead: true), "hangs")
        #expect(waitFor { FileManager.default.fileExists(atPath: s.file("hangs.sock")) }, "\(hanging.log)")
        let t1 = NBDSource.now
        let read = try run("nbdcopy", ["--no-extents", uri, s.file("hung.raw")], timeout: 30)
        #expect(read.status != 0, "a hanging source was served")
        #expect(NBDSource.now - t1 < 15)
        #expect(waitFor { !hanging.isRunning } && hanging.log.contains("did not complete an open or a read within 2 s"), "\(hanging.log)")

        // Hangs in its open (connecting to its data), which filter mode defers to the first payload read.
        let (opening, openURI) = try serve(try exposed("opens", script: "#!/bin/sh\ncase \"$1\" in open) sleep 30 ;; *) exit 2 ;; esac\n"), "opens")
        #expect(waitFor { FileManager.default.fileExists(atPath: s.file("opens.sock")) }, "\(opening.log)")
        let t2 = NBDSource.now
        let stalled = try run("nbdcopy", ["--no-extents", openURI, s.file("open.raw")], timeout: 30)
        #expect(stalled.status != 0, "a source hanging in its open was served")
        #expect(NBDSource.now - t2 < 15)
        #expect(waitFor { !opening.isRunning } && opening.log.contains("did not complete an open or a read within 2 s"), "\(opening.log)")
    }

    /// A pointer edited to run a program outside the plugin's tree is refused by `bootlab serve`
    /// before it chooses a mode (nothing runs), as in the two-process path.
    @Test func filterModeRefusesAPointerEditedToRunSomethingElse() throws {
        let s = Scratch()
        let plug = s.dir("plug")
        _ = try writeVolume(plug + "/vol.img")
        let marker = s.file("started")
        try writeShellPlugin(plug + "/reader.sh", file: plug + "/vol.img", marker: marker)
        _ = try PluginFile.exposeSource(BackupSourceSpec(kind: .nbdkit, argv: ["sh", plug + "/reader.sh"]), pluginPath: plug + "/vm.vhdx", options: exposeOptions())
        try writeShellPlugin(s.file("evl.sh"), file: plug + "/vol.img", marker: marker)
        try FileManager.default.removeItem(atPath: marker)
        try ExternalSourceTests().rewritePointer(plug + "/vm.vhdx", replacing: "\"reader.sh\"", with: "\"../evl.sh\"")
        let r = try run(bootlabPath, ["serve", plug + "/vm.vhdx", "--socket", s.file("e.sock"), "--allow-source-plugin", "sh"], timeout: 30)
        #expect(r.status == 1)
        #expect(r.stderr.contains("../evl.sh lies outside the plugin's directory tree"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: marker), "a refused source must not have run")
    }
}
