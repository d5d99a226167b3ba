import Archives
import Foundation

/// The tiny guest userland: static busybox and an `/init` that loads the machine's modules,
/// finds the root volume by UUID, mounts it read-only and prints the marker it reads from it.
/// Its failure lines are what must-not-boot expectations match (`BOOTLAB: root device not found`).
enum Initramfs {
    static let markerPrefix = "BOOTLAB-MARKER: "
    /// `BOOTLAB-NIC-PCI: <slot> <vendor>:<device> pci-driver=<driver|none>`, one per network adapter.
    static let nicPCIPrefix = "BOOTLAB-NIC-PCI: "
    /// `BOOTLAB-NIC: <interface> driver=<driver>`, one per interface with a device.
    static let nicPrefix = "BOOTLAB-NIC: "

    /// Seconds the guest waits for the root device before giving up (SCSI scans are asynchronous).
    static let rootWaitTicks = 40  // × 0.25 s

    static func initScript() -> String {
        """
        #!/bin/busybox sh
        # BootLab guest init: prove the root volume is reachable with the drivers we carry.
        /bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
        /bin/busybox --install -s
        mount -t devtmpfs devtmpfs /dev
        exec >/dev/console 2>&1 </dev/console
        mount -t proc proc /proc
        mount -t sysfs sysfs /sys
        echo "BOOTLAB: init started on $(uname -r)"
        for m in $(cat /etc/bootlab/absent); do echo "BOOTLAB: module $m absent from this kernel"; done
        # /etc/bootlab/modules: paths under /lib/modules/<release>/, in load order (the convention
        # the reconfiguration engine edits, docs/reconfigure.md).
        kv=$(uname -r)
        for m in $(grep -v '^#' /etc/bootlab/modules); do
          insmod /lib/modules/$kv/$m || echo "BOOTLAB: insmod $m failed"
        done
        # The network adapters the guest sees (PCI class 0x0200xx) and which driver took each
        # interface: the NIC validator holds these lines to the target's adapter.
        for d in /sys/bus/pci/devices/*; do
          case $(cat $d/class) in 0x0200*)
            drv=none
            [ -e $d/driver ] && drv=$(basename $(readlink $d/driver))
            echo "\(nicPCIPrefix)$(basename $d) $(cat $d/vendor | cut -c3-):$(cat $d/device | cut -c3-) pci-driver=$drv" ;;
          esac
        done
        for n in /sys/class/net/*; do
          [ -e $n/device/driver ] && echo "\(nicPrefix)$(basename $n) driver=$(basename $(readlink $n/device/driver))"
        done
        root=$(cat /etc/bootlab/root)
        dev=""
        i=0
        while [ $i -lt \(rootWaitTicks) ]; do
          dev=$(findfs "$root" 2>/dev/null) && break
          dev=""
          sleep 0.25
          i=$((i+1))
        done
        if [ -z "$dev" ]; then
          echo "BOOTLAB: root device not found ($root)"
          echo "BOOTLAB: block devices: $(cat /proc/partitions | tail -n +3 | tr -s ' ' | cut -d' ' -f5 | tr '\\n' ' ')"
          poweroff -f
        fi
        echo "BOOTLAB: root device $dev"
        if ! mount -o ro -t $(cat /etc/bootlab/fstype) "$dev" /mnt; then
          echo "BOOTLAB: root mount failed ($dev)"
          poweroff -f
        fi
        if [ -r /mnt/bootlab/marker ]; then
          echo "\(markerPrefix)$(cat /mnt/bootlab/marker)"
        else
          echo "BOOTLAB: marker file missing on root"
        fi
        umount /mnt
        poweroff -f

        """
    }

    /// Builds the uncompressed archive; returns its bytes.
    static func build(busybox: URL, kernel: KernelTree, modules: ModuleResolver.Resolution,
                      rootSpec: String, fstype: String) throws -> [UInt8] {
        var entries: [CpioEntry] = []
        for dir in ["bin", "dev", "etc", "etc/bootlab", "lib", "lib/modules", "mnt", "proc", "sys"] {
            entries.append(.directory(dir, nlink: 2))
        }
        entries.append(.characterDevice("dev/console", major: 5, minor: 1))
        entries.append(.file("bin/busybox", Array(try Data(contentsOf: busybox)), mode: 0o755))
        entries.append(.file("init", Array(initScript().utf8), mode: 0o755))
        // Modules keep their place in the kernel's tree (lib/modules/<release>/kernel/…), as a
        // real initramfs does; the load list names them by that relative path.
        var dirs = Set(["lib/modules"])
        let tree = "lib/modules/\(kernel.release)"
        for file in modules.files {
            var dir = tree
            for part in ([""] + file.split(separator: "/").dropLast().map(String.init)) {
                if !part.isEmpty { dir += "/" + part }
                if dirs.insert(dir).inserted { entries.append(.directory(dir, nlink: 2)) }
            }
            let data = try Data(contentsOf: kernel.modulesDirectory.appendingPathComponent(file))
            entries.append(.file("\(tree)/\(file)", Array(data), mode: 0o644))
        }
        entries.append(.file("etc/bootlab/modules", Array((modules.files.joined(separator: "\n") + "\n").utf8)))
        entries.append(.file("etc/bootlab/absent", Array((modules.absent.joined(separator: "\n") + "\n").utf8)))
        entries.append(.file("etc/bootlab/root", Array((rootSpec + "\n").utf8)))
        entries.append(.file("etc/bootlab/fstype", Array((fstype + "\n").utf8)))
        // Inode numbers 1, 2, … in this order, owners and times zero: equal inputs, equal bytes.
        return Cpio.write(entries)
    }
}
