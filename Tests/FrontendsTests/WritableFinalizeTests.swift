import Testing
import Foundation
import TestSupport
import BlockCore
import DiskFormats
import Exposure
#if canImport(Glibc)
import Glibc
#endif

/// `bootlab mount --writable --materialize --finalize` (docs/replacement-file.md, "Finalize under
/// a writable mount"), with real FUSE, real QEMU (TCG) and real kill -9: a VM boots writable
/// mid-fill and keeps running — and writing — across the finalize; a file descriptor opened
/// before the switch keeps writing and reading after it; kill -9 inside the finalize loses no
/// acknowledged write, and the restarted mount finishes it. Checked without the mount by qemu-img.
@Suite(.serialized) struct WritableFinalizeTests {
    static let guestTools = toolsMissing(["qemu-system-x86_64", "mkfs.fat", "mcopy", "syslinux", "sfdisk", "busybox", "cpio", "modprobe"])

    /// The guest disk (20 MiB, BIOS, syslinux; FAT16 partition at 1 MiB..17 MiB with the host's
    /// kernel and a busybox initramfs that loads virtio-blk). The guest writes exact bytes
    /// straight to the disk (no file system, so the expected disk is known byte for byte):
    /// 64 KiB of `BOOTLAB-GUEST-BEFORE` lines at 18 MiB, then waits — reading 4 KiB at
    /// `signal` with O_DIRECT every 0.2 s — until the test's write after the switch shows there,
    /// writes 64 KiB of `BOOTLAB-GUEST-AFTER` lines at 19 MiB, reads them back with O_DIRECT and
    /// powers off.
    static func buildGuest(in dir: Scratch, signal: UInt64) throws -> String {
        let script = #"""
        set -euo pipefail
        out=$1; W=$2; SIGNAL4K=$3
        KV=$(ls /lib/modules | grep -- '-amd64$' | sort -V | tail -1)
        ir=$W/ir; mkdir -p "$ir/bin" "$ir/proc" "$ir/sys" "$ir/dev" "$ir/lib/modules/$KV"
        cp /bin/busybox "$ir/bin/busybox"
        for m in virtio_pci virtio_blk; do modprobe --show-depends -S "$KV" "$m"; done | awk '$1=="insmod"{print $2}' | awk '!s[$0]++' > "$W/mods"
        while read -r p; do cp "$p" "$ir/lib/modules/$KV/"; basename "$p"; done < "$W/mods" > "$ir/modules"
        cat > "$ir/init" <<'INIT'
        #!/bin/busybox sh
        /bin/busybox --install -s /bin
        mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
        KV=$(uname -r)
        while read -r m; do insmod "/lib/modules/$KV/$m" 2>/dev/null; done < /modules
        i=0; while [ ! -b /dev/vda ] && [ $i -lt 80 ]; do sleep 0.25; i=$((i+1)); done
        yes BOOTLAB-GUEST-BEFORE | head -c 65536 | dd of=/dev/vda bs=65536 seek=288 iflag=fullblock oflag=direct conv=fsync 2>/dev/null
        echo "BOOTLAB-GUEST-WROTE"
        i=0; s=
        while [ $i -lt 900 ]; do
          s=$(dd if=/dev/vda bs=4096 skip=@SIGNAL4K@ count=1 iflag=direct 2>/dev/null | head -c 18)
          [ "$s" = "BOOTLAB-TEST-AFTER" ] && break
          sleep 0.2; i=$((i+1))
        done
        echo "BOOTLAB-GUEST-SAW $s"
        yes BOOTLAB-GUEST-AFTER | head -c 65536 | dd of=/dev/vda bs=65536 seek=304 iflag=fullblock oflag=direct conv=fsync 2>/dev/null
        echo "BOOTLAB-GUEST-READ $(dd if=/dev/vda bs=4096 skip=4864 count=1 iflag=direct 2>/dev/null | head -c 19)"
        echo "BOOTLAB-MARKER done"
        poweroff -f
        INIT
        sed -i "s/@SIGNAL4K@/$SIGNAL4K/" "$ir/init"
        chmod 755 "$ir/init"
        (cd "$ir" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$W/initrd.gz"
        printf 'DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL /vmlinuz\n  INITRD /initrd.gz\n  APPEND console=ttyS0 quiet panic=-1\n' > "$W/syslinux.cfg"
        truncate -s 16M "$W/part.img"
        mkfs.fat -F 16 -h 2048 -i 1234ABCD "$W/part.img" >/dev/null
        export MTOOLS_SKIP_CHECK=1
        mcopy -i "$W/part.img" -m "/boot/vmlinuz-$KV" ::/vmlinuz
        mcopy -i "$W/part.img" -m "$W/initrd.gz" "$W/syslinux.cfg" ::/
        syslinux --install "$W/part.img"
        truncate -s 20M "$out"
        printf 'label: dos\nlabel-id: 0x0b007003\nstart=2048, size=32768, type=6, bootable\n' | sfdisk -q "$out"
        dd if=/usr/lib/syslinux/mbr/mbr.bin of="$out" bs=440 count=1 conv=notrunc status=none
        dd if="$W/part.img" of="$out" bs=1M seek=1 conv=notrunc status=none
        """#
        let out = dir.file("disk.raw")
        let r = try run("bash", ["-c", script, "build-guest", out, dir.dir("guest-work"), "\(signal / 4096)"], timeout: 120)
        guard r.status == 0 else { throw TestFailure("building the guest disk failed: \(r.stderr)") }
        return out
    }

    struct TestFailure: Error, CustomStringConvertible { var description: String; init(_ d: String) { description = d } }

    /// `bootlab ARGS`, which must succeed.
    @discardableResult
    static func bootlab(_ args: [String]) throws -> String {
        let r = try run(bootlabPath, args, timeout: 300)
        guard r.status == 0 else { throw TestFailure("bootlab \(args.joined(separator: " ")): exit \(r.status): \(r.stderr)") }
        return r.stdout
    }

    /// The file offset of virtual byte `v` of the VHDX at `path`, from its BAT (nil: the block is
    /// not fully present in the file). (`qemu-img map` reports no file offsets for VHDX.) A wrong
    /// answer cannot pass a test: the writes would then not show where `qemu-img compare` expects them.
    static func fileOffset(ofVirtual v: UInt64, in path: String) throws -> UInt64? {
        let f = try VHDXFile.open(path: path)
        let bs = UInt64(f.blockSize)
        let entry = f.batEntries[Int(f.geometry.payloadIndex(v / bs))]
        guard VHDX.batState(entry) == 6 else { return nil }
        return VHDX.batOffset(entry) + v % bs
    }

    static func pattern(_ line: String, _ count: Int) -> [UInt8] {
        let l = Array((line + "\n").utf8)
        return (0..<count).map { l[$0 % l.count] }
    }

    static func pwriteAll(_ fd: Int32, _ bytes: [UInt8], at offset: UInt64) -> Bool {
        bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, off_t(offset)) } == bytes.count
    }

    static func pread(_ fd: Int32, _ count: Int, at offset: UInt64) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: count)
        let n = b.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress!, count, off_t(offset)) }
        return n == count ? b : []
    }

    static func phase(_ plugin: String) -> String { (try? Replacement.status(pluginPath: plugin).phase) ?? "?" }

    /// A guest boots writable through `mount --writable --materialize --finalize` while the fill
    /// runs (throttled to last about 10 s) and writes; a descriptor the test opens on the mounted
    /// file writes too; the fill completes and the mount finalizes with both open (the test
    /// chooses the moment: `--finalize-hold`, so a slow boot under load cannot come after the
    /// switch); the descriptor writes again after the switch and reads both writes back; the
    /// guest reads that write, writes again and reads its write back. Then `vm.vhdx` — through the
    /// mount and without it — is the native VHDX, `qemu-img check` clean, and `qemu-img compare`
    /// finds it equal to the plugin's disk with exactly those four writes.
    @Test(.requiresFUSE, .requires(missing: guestTools))
    func aWritableVMKeepsRunningAndWritingAcrossTheFinalize() throws {
        let dir = Scratch("wfin-vm")
        let vA: UInt64 = 4 << 20, vB: UInt64 = 5 << 20      // in the partition, under the kernel's clusters
        let disk = try Self.buildGuest(in: dir, signal: vB)
        let pass = dir.file("pass")
        try Data("writable finalize".utf8).write(to: URL(fileURLWithPath: pass))
        let p = dir.dir("p"), mnt = dir.dir("mnt"), plugin = p + "/vm.vhdx"
        try Self.bootlab(["backup", "create", disk, p + "/vm.bli", "--partition", "1", "--compress", "zstd", "--encrypt",
                          "--passphrase-file", pass, "--scrypt-log-n", "10", "--seed", "writable-finalize"])
        let backupDigest = try sha256(ofFile: p + "/vm.bli")
        try Self.bootlab(["expose", p + "/vm.bli", "--out", plugin, "--passphrase-file", pass])
        try Self.bootlab(["convert", "-O", "raw", "--passphrase-file", pass, plugin, dir.file("expected.raw")])
        let offA = try #require(try Self.fileOffset(ofVirtual: vA, in: plugin), "virtual \(vA) is not allocated in the plugin")
        let offB = try #require(try Self.fileOffset(ofVirtual: vB, in: plugin), "virtual \(vB) is not allocated in the plugin")
        let a = Self.pattern("BOOTLAB-TEST-BEFORE", 65536), b = Self.pattern("BOOTLAB-TEST-AFTER", 65536)
        let rate = try RawFile(path: plugin).size / 10
        let hold = dir.file("hold"), stats = dir.file("stats.json")
        try Data().write(to: URL(fileURLWithPath: hold))

        let mount = try Server(["mount", p, mnt, "--writable", "--materialize", "--finalize", "--rate", "\(rate)",
                                "--finalize-hold", hold, "--stats-file", stats, "--passphrase-file", pass],
                               log: dir.file("mount.log"))
        defer { mount.stop(SIGKILL); unmount(mnt) }
        #expect(waitFor { isMounted(mnt) }, "\(mount.log)")
        let console = dir.file("console.log")
        let qemu = try Server(["timeout", "300", "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-display", "none", "-nographic",
                               "-no-reboot", "-monitor", "none", "-serial", "file:" + console,
                               "-drive", "file=\(mnt)/vm.vhdx,format=vhdx,if=virtio,cache=writeback"],
                              log: dir.file("qemu.log"), executable: "/usr/bin/env")
        defer { qemu.stop(SIGKILL) }
        func consoleText() -> String { (try? String(contentsOfFile: console, encoding: .utf8)) ?? "" }
        #expect(Self.phase(plugin) == "filling", "the boot did not start mid-fill")

        // The guest wrote: before the finalize, its boot read ranges not yet filled (from the backup).
        #expect(waitFor(180) { consoleText().contains("BOOTLAB-GUEST-WROTE") || !qemu.isRunning }, "\(consoleText())")
        try #require(consoleText().contains("BOOTLAB-GUEST-WROTE"), "the guest did not write: \(consoleText()) \(mount.log)")
        #expect(Self.phase(plugin) != "finalized")
        mount.signal(SIGUSR1)
        #expect(waitFor {
            guard let d = FileManager.default.contents(atPath: stats),
                  let doc = try? JSONSerialization.jsonObject(with: d) as? [String: Any],
                  let m = (doc["materializations"] as? [[String: Any]])?.first else { return false }
            return ((m["servedFromBackup"] as? NSNumber)?.uint64Value ?? 0) > 0
        }, "the boot read nothing from the backup: not mid-fill")

        // A descriptor of the test's own on the mounted file, open across the switch.
        let fd = open(mnt + "/vm.vhdx", O_RDWR)
        try #require(fd >= 0, "open through the mount: errno \(errno)")
        defer { close(fd) }
        #expect(Self.pwriteAll(fd, a, at: offA), "write before the finalize: errno \(errno)")
        #expect(fsync(fd) == 0)
        #expect(Self.pread(fd, a.count, at: offA) == a)

        // The fill completes (the finalize waits for the hold); then the mount finalizes with the
        // guest and the descriptor open.
        #expect(waitFor(180) { Self.phase(plugin) == "complete" }, "phase \(Self.phase(plugin)): \(mount.log)")
        #expect(PluginFile.isPlugin(path: plugin))
        unlink(hold)
        #expect(waitFor(60) { Self.phase(plugin) == "finalized" }, "phase \(Self.phase(plugin)): \(mount.log)")
        #expect(!PluginFile.isPlugin(path: plugin) && PluginFile.isPlugin(path: plugin + ".plugin"))
        #expect(qemu.isRunning, "the VM stopped before the switch: \(consoleText())")
        // The mount's own statistics say so too (they said "complete" before).
        mount.signal(SIGUSR1)
        #expect(waitFor {
            guard let d = FileManager.default.contents(atPath: stats),
                  let doc = try? JSONSerialization.jsonObject(with: d) as? [String: Any],
                  let m = (doc["materializations"] as? [[String: Any]])?.first else { return false }
            return m["phase"] as? String == "finalized" && (m["replacement"] as? String).map { $0 == m["plugin"] as? String } == true
        }, "--stats after the in-process finalize: \((try? String(contentsOfFile: stats, encoding: .utf8)) ?? "")")

        // After the switch, through the same descriptor: write, then read both back.
        #expect(Self.pwriteAll(fd, b, at: offB), "write after the finalize: errno \(errno)")
        #expect(fsync(fd) == 0)
        #expect(Self.pread(fd, a.count, at: offA) == a, "the write from before the switch, read after it")
        #expect(Self.pread(fd, b.count, at: offB) == b, "the write from after the switch")

        // The guest reads that write, writes after the switch and reads its write back.
        #expect(waitFor(180) { !qemu.isRunning }, "\(consoleText())")
        let text = consoleText()
        #expect(text.contains("BOOTLAB-GUEST-SAW BOOTLAB-TEST-AFTER"), "the guest did not see the post-switch write: \(text)")
        #expect(text.contains("BOOTLAB-GUEST-READ BOOTLAB-GUEST-AFTER"), "\(text)")
        #expect(text.contains("BOOTLAB-MARKER done"), "\(text)")

        // The mounted path is the native file now (a new open passes through to it).
        #expect(!PluginFile.isPlugin(path: mnt + "/vm.vhdx"))
        #expect(try run("cmp", [mnt + "/vm.vhdx", plugin]).status == 0, "the mounted path is not the native file")
        #expect(!mount.log.contains("finalize"), "\(mount.log)")
        close(fd)
        #expect(mount.stop(SIGTERM) == 0, "\(mount.log)")

        // No mount: qemu-img opens the finalized file directly.
        let expected = try RawFile(path: dir.file("expected.raw"), writable: true)
        try expected.write(at: vA, a)
        try expected.write(at: vB, b)
        try expected.write(at: 18 << 20, Self.pattern("BOOTLAB-GUEST-BEFORE", 65536))
        try expected.write(at: 19 << 20, Self.pattern("BOOTLAB-GUEST-AFTER", 65536))
        try expected.flush()
        let check = try run("qemu-img", ["check", "-f", "vhdx", plugin])
        #expect(check.status == 0 && check.stdout.contains("No errors"), "\(check.stdout)\(check.stderr)")
        let compare = try run("qemu-img", ["compare", "-f", "vhdx", "-F", "raw", plugin, dir.file("expected.raw")])
        #expect(compare.status == 0, "the finalized disk is not the plugin's with the four writes: \(compare.stdout)\(compare.stderr)")
        #expect(access(p + "/vm.vhdx.overlay.map", F_OK) != 0 && access(p + "/vm.vhdx.plugin.overlay.map", F_OK) == 0)
        #expect(try sha256(ofFile: p + "/vm.bli") == backupDigest, "the backup was written")
    }

    /// kill -9 of the mount inside the writable finalize (explicit fault points: the overlay built
    /// into the replacement; the old plugin linked aside; the replacement renamed over `vm.vhdx`,
    /// the open file not yet switched) while a writer writes through the mount without pause, from
    /// mid-fill until the kill: the restarted mount finishes the finalize, every acknowledged
    /// write is in the native file, which is `convert -O vhdx` of the plugin with exactly those
    /// writes (cmp, and qemu-img compare and check).
    @Test(.requiresFUSE, arguments: ["finalize-built", "finalize-linked", "finalize-renamed"])
    func killedInsideTheWritableFinalizeLosesNoAcknowledgedWrite(point: String) throws {
        let dir = Scratch("wfin-kill")
        _ = try makeDisk(dir.file("disk.raw"), seed: 31, size: 8 << 20)
        let p = dir.dir("p"), mnt = dir.dir("mnt"), plugin = p + "/vm.vhdx"
        try Self.bootlab(["backup", "create", dir.file("disk.raw"), p + "/vm.bli", "--compress", "zstd", "--seed", "writable-finalize-kill"])
        try Self.bootlab(["expose", p + "/vm.bli", "--out", plugin])
        try Self.bootlab(["convert", "-O", "vhdx", plugin, dir.file("expected.vhdx")])
        let region = try #require(try Self.fileOffset(ofVirtual: 1 << 20, in: plugin))
        let slots = 64, record = 4096
        let rate = try RawFile(path: plugin).size / 3  // about 3 s of fill: the writer starts mid-fill

        let args = ["mount", p, mnt, "--writable", "--materialize", "--finalize"]
        let mount = try Server(args + ["--rate", "\(rate)", "--materialize-fault", "kill:\(point)"], log: dir.file("mount1.log"))
        defer { mount.stop(SIGKILL); unmount(mnt) }
        #expect(waitFor { isMounted(mnt) }, "\(mount.log)")
        let fd = open(mnt + "/vm.vhdx", O_RDWR)
        try #require(fd >= 0, "open through the mount: errno \(errno)")
        // Written without pause until the mount dies; acknowledged = pwrite returned the count.
        var acknowledged: [Int: [UInt8]] = [:]
        var inFlight: (slot: Int, bytes: [UInt8])?
        var seq = 0, midFill = 0
        let deadline = Date().addingTimeInterval(90)
        while Date() < deadline {
            let slot = seq % slots
            var rec = [UInt8](repeating: UInt8(truncatingIfNeeded: seq &* 7 &+ 1), count: record)
            rec.replaceSubrange(0..<16, with: Array(String(format: "seq %011d\n", seq).utf8))
            if seq % 64 == 0, Self.phase(plugin) == "filling" { midFill += 1 }
            guard Self.pwriteAll(fd, rec, at: region + UInt64(slot * record)) else {
                inFlight = (slot, rec)
                break
            }
            acknowledged[slot] = rec
            seq += 1
        }
        close(fd)
        #expect(mount.process.wait(timeout: 60).map { if case .signaled(SIGKILL) = $0 { true } else { false } } == true,
                "the mount was to kill itself at \(point): \(mount.log)")
        unmount(mnt)
        #expect(midFill > 0, "no write was made mid-fill")
        #expect(seq > slots, "only \(seq) writes were acknowledged")

        // What the kill left: before the rename the plugin (the writes in its overlay), after it the native file.
        let overlayLeft = access(p + "/vm.vhdx.overlay.map", F_OK) == 0
        switch point {
        case "finalize-renamed": #expect(!PluginFile.isPlugin(path: plugin) && overlayLeft)
        default: #expect(PluginFile.isPlugin(path: plugin) && overlayLeft && access(p + "/vm.vhdx.replacement", F_OK) == 0)
        }

        // The restarted mount finishes the finalize.
        let again = try Server(args, log: dir.file("mount2.log"))
        defer { again.stop(SIGKILL); unmount(mnt) }
        #expect(waitFor { isMounted(mnt) }, "\(again.log)")
        #expect(waitFor(60) {
            Self.phase(plugin) == "finalized" && access(p + "/vm.vhdx.overlay.map", F_OK) != 0 && access(p + "/vm.vhdx.fill", F_OK) != 0
        }, "phase \(Self.phase(plugin)): \(again.log)")
        let rfd = open(mnt + "/vm.vhdx", O_RDONLY)
        try #require(rfd >= 0)
        var lost: [Int] = []
        var final: [Int: [UInt8]] = [:]
        for slot in 0..<slots {
            let got = Self.pread(rfd, record, at: region + UInt64(slot * record))
            final[slot] = got
            // The write the kill interrupted was not acknowledged: either bytes may be there.
            if let f = inFlight, f.slot == slot, got == f.bytes { continue }
            if let want = acknowledged[slot], got != want { lost.append(slot) }
        }
        close(rfd)
        #expect(lost.isEmpty, "acknowledged writes lost in slots \(lost) (kill at \(point))")
        #expect(again.stop(SIGTERM) == 0, "\(again.log)")

        // The native file: convert's file with exactly these writes.
        let expected = try RawFile(path: dir.file("expected.vhdx"), writable: true)
        for (slot, bytes) in final { try expected.write(at: region + UInt64(slot * record), bytes) }
        try expected.flush()
        #expect(try run("cmp", [plugin, dir.file("expected.vhdx")]).status == 0, "the finalized file differs from convert + the writes")
        let check = try run("qemu-img", ["check", "-f", "vhdx", plugin])
        #expect(check.status == 0 && check.stdout.contains("No errors"), "\(check.stdout)\(check.stderr)")
        let compare = try run("qemu-img", ["compare", "-f", "vhdx", "-F", "vhdx", plugin, dir.file("expected.vhdx")])
        #expect(compare.status == 0, "\(compare.stdout)\(compare.stderr)")
        #expect(PluginFile.isPlugin(path: plugin + ".plugin") && access(p + "/vm.vhdx.plugin.overlay.map", F_OK) == 0)
        #expect(access(p + "/vm.vhdx.plugin.replacement", F_OK) != 0, "the mount began filling the old plugin")
    }
}
