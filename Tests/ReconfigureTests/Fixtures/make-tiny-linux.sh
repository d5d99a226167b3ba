#!/bin/bash
# make-tiny-linux.sh OUT.raw MODULE...
# A small, deterministic BIOS disk: syslinux MBR, one FAT32 partition at 1 MiB holding the host's
# generic Debian kernel, a static-busybox initramfs whose load list (/etc/bootlab/modules, the
# convention in docs/reconfigure.md) holds only MODULE... (+ dependencies and the FAT modules),
# the storage modules of every known controller under /lib/modules/<version> on the volume, and
# /marker.txt. The kernel command line says root=/dev/sda1: the "foreign" machine's view.
set -euo pipefail
out=$1; shift
KV=${BOOTLAB_TINY_KERNEL:-$(ls /lib/modules | grep -- '-amd64$' | sort -V | tail -1)}
MOD=/lib/modules/$KV
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
closure() { modprobe --show-depends -S "$KV" "$@" | awk '$1=="insmod"{sub("^'"$MOD"'/","",$2); print $2}'; }
copy_modules() { # DEST MODULE...
  local dest=$1; shift
  for m in "$@"; do closure "$m"; done | awk '!seen[$0]++' > "$work/list"
  while read -r p; do mkdir -p "$dest/lib/modules/$KV/$(dirname "$p")"; cp "$MOD/$p" "$dest/lib/modules/$KV/$p"; done < "$work/list"
  cp "$MOD/modules.order" "$MOD/modules.builtin" "$MOD/modules.builtin.modinfo" "$dest/lib/modules/$KV/"
  depmod -b "$dest" "$KV"
}
# Initramfs
ir=$work/initramfs; mkdir -p "$ir/bin" "$ir/etc/bootlab" "$ir/proc" "$ir/sys" "$ir/dev" "$ir/mnt"
cp /bin/busybox "$ir/bin/busybox"
copy_modules "$ir" "$@" fat vfat nls_cp437 nls_ascii
cp "$work/list" "$ir/etc/bootlab/modules"
cat > "$ir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
KV=$(uname -r)
while read -r m; do
  case "$m" in ''|'#'*) continue;; esac
  insmod "/lib/modules/$KV/$m" 2>/dev/null || echo "bootlab: insmod $m failed"
done < /etc/bootlab/modules
root=
for a in $(cat /proc/cmdline); do case "$a" in root=*) root=${a#root=};; esac; done
dev=; i=0
while [ $i -lt 8 ]; do
  case "$root" in UUID=*|LABEL=*) dev=$(findfs "$root" 2>/dev/null) || dev=;; *) [ -b "$root" ] && dev=$root;; esac
  [ -n "$dev" ] && break
  sleep 1; i=$((i+1))
done
if [ -n "$dev" ] && mount -t vfat -o ro "$dev" /mnt && [ -f /mnt/marker.txt ]; then
  cat /mnt/marker.txt
else
  echo "BOOTLAB-ROOT-MISSING root=$root"
fi
poweroff -f
INIT
chmod 755 "$ir/init"
find "$ir" -exec touch -h -d @0 {} +
(cd "$ir" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --reproducible --quiet -R 0:0) | gzip -n -9 > "$work/initrd.gz"
# Volume
vol=$work/vol; mkdir -p "$vol"
copy_modules "$vol" ata_piix ahci virtio_pci virtio_blk virtio_scsi vmw_pvscsi megaraid_sas sd_mod fat vfat nls_cp437 nls_ascii
printf 'DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL /vmlinuz\n  INITRD /initrd.gz\n  APPEND root=/dev/sda1 console=ttyS0 quiet panic=-1\n' > "$work/syslinux.cfg"
echo "BOOTLAB-MARKER tiny-linux booted" > "$work/marker.txt"
part=$work/part.img
truncate -s 48M "$part"
mkfs.fat -F 32 -h 2048 -i 1234ABCD -n BOOTLAB "$part" >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i "$part" -m /boot/vmlinuz-$KV ::/vmlinuz
mcopy -i "$part" -m "$work/initrd.gz" "$work/syslinux.cfg" "$work/marker.txt" ::/
mcopy -i "$part" -s -m "$vol/lib" ::/
syslinux --install "$part"
rm -f "$out"; truncate -s 52M "$out"
printf 'label: dos\nlabel-id: 0x0b007001\nstart=2048, size=98304, type=c, bootable\n' | sfdisk -q "$out"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$out" bs=440 count=1 conv=notrunc status=none
dd if="$part" of="$out" bs=1M seek=1 conv=notrunc,sparse status=none
