#!/bin/bash
# make-debian-uefi.sh [ROOT_UUID ESP_SERIAL]  →  prints the path of a cached Debian ext4 root volume
# The real Debian UEFI install of issue 14 (docs/uefi.md, "A real Debian UEFI install"):
# debootstrap --variant=minbase bookworm with the cloud kernel, grub-efi-amd64-bin (GRUB's
# x86_64-efi modules in /usr/lib/grub/x86_64-efi, what grub-install copies to the ESP), dosfstools
# (fsck.vfat for the ESP's fstab pass), a hand-written /boot/grub/grub.cfg (root=UUID=…,
# console=ttyS0, no_timer_check), and the fstab a UEFI install has:
#     UUID=<root>       /          ext4  errors=remount-ro  0 1
#     UUID=XXXX-XXXX    /boot/efi  vfat  umask=0077         0 1
# ESP_SERIAL is the FAT volume ID (8 hex digits) of the ESP the lab's generator puts beside this
# volume (DiskGenerator.buildUEFIDisk); the volume itself holds no ESP and no boot code.
# A systemd oneshot unit ordered after local-fs.target prints `findmnt /boot/efi` and, only if a
# vfat file system is mounted there, the marker `BOOTLAB-MARKER debian-uefi booted` on /dev/ttyS0,
# then powers off. So a boot reaches the marker only if the fstab's /boot/efi entry names a FAT
# file system the booted disk has (a wrong UUID: systemd waits 90 s for the device, fails
# local-fs.target and drops to emergency mode; no marker).
#
# Cached under $BOOTLAB_CACHE/debian-uefi/<key>/ (default /var/tmp/bootlab-cache), where <key>
# hashes this script, its arguments, debootstrap's version and the mirror's candidate versions of
# the included packages; a rebuild happens only when one of them changes (measured: 3–5 min,
# mostly debootstrap, on the shared 2-core machine). versions.txt records what was installed.
set -euo pipefail
CACHE=${BOOTLAB_CACHE:-/var/tmp/bootlab-cache}
MIRROR=${BOOTLAB_DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PKGS=linux-image-cloud-amd64,grub-efi-amd64-bin,dosfstools,systemd-sysv,udev,initramfs-tools,kmod
UUID=${1:-b0071ab0-6e1b-4d2e-9a5c-0000000e1f12}
ESP_SERIAL=${2:-b0071e5f}
HASH_SEED=b0071ab0-6e1b-4d2e-9a5c-00000000fee1
MARKER="BOOTLAB-MARKER debian-uefi booted"
SIZE=512M
[[ $UUID =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]] || { echo "bad root UUID: $UUID" >&2; exit 2; }
[[ $ESP_SERIAL =~ ^[0-9a-fA-F]{8}$ ]] || { echo "bad ESP serial (8 hex digits): $ESP_SERIAL" >&2; exit 2; }
ESP_SERIAL=${ESP_SERIAL^^}
ESP_UUID=${ESP_SERIAL:0:4}-${ESP_SERIAL:4:4}

versions() {
  dpkg-query -W -f='debootstrap ${Version}\n' debootstrap
  dpkg-query -W -f='e2fsprogs ${Version}\n' e2fsprogs
  for p in ${PKGS//,/ }; do
    printf '%s %s\n' "$p" "$(apt-cache show --no-all-versions "$p" 2>/dev/null | awk '/^Version:/ && !v {v=$2} END {print v}')"
  done
  # The metapackage pins an ABI; the kernel package itself carries the upload version.
  dep=$(apt-cache show --no-all-versions linux-image-cloud-amd64 | awk -F'[ ,]+' '/^Depends:/ && !d {d=$2} END {print d}')
  printf '%s %s\n' "$dep" "$(apt-cache show --no-all-versions "$dep" 2>/dev/null | awk '/^Version:/ && !v {v=$2} END {print v}')"
}
key=$( { sha256sum < "$0"; versions; echo "$MIRROR $UUID $ESP_UUID"; } | sha256sum | cut -c1-24)
dir=$CACHE/debian-uefi/$key
mkdir -p "$CACHE/debian-uefi"
# One builder at a time (parallel test processes share the cache).
exec 9>"$CACHE/debian-uefi/.lock"
flock 9
if [ -f "$dir/volume.raw" ] && [ -f "$dir/done" ]; then echo "$dir/volume.raw"; exit 0; fi

mkdir -p "$dir"
work=$(mktemp -d /var/tmp/bootlab-debian-uefi-XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
debootstrap --variant=minbase --include=$PKGS $SUITE "$root" "$MIRROR" > "$work/debootstrap.log" 2>&1 \
  || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
chroot "$root" apt-get clean
KV=$(ls "$root/lib/modules" | sort -V | tail -1)
[ -f "$root/boot/vmlinuz-$KV" ] && [ -f "$root/boot/initrd.img-$KV" ] || { echo "no kernel/initrd for $KV" >&2; exit 1; }
for f in kernel.img normal.mod part_gpt.mod fat.mod; do
  [ -f "$root/usr/lib/grub/x86_64-efi/$f" ] || { echo "grub-efi-amd64-bin modules missing ($f)" >&2; exit 1; }
done
[ -x "$root/sbin/fsck.vfat" ] || [ -x "$root/usr/sbin/fsck.vfat" ] || { echo "dosfstools missing (fsck.vfat)" >&2; exit 1; }

mkdir -p "$root/boot/grub" "$root/boot/efi"
cat > "$root/boot/grub/grub.cfg" <<EOF
set timeout=0
set default=0
menuentry 'Debian GNU/Linux (BootLab UEFI)' {
  insmod part_gpt
  insmod ext2
  search --no-floppy --fs-uuid --set=root $UUID
  linux /boot/vmlinuz-$KV root=UUID=$UUID ro console=ttyS0 quiet no_timer_check
  initrd /boot/initrd.img-$KV
}
EOF
cat > "$root/etc/fstab" <<EOF
UUID=$UUID / ext4 errors=remount-ro 0 1
UUID=$ESP_UUID /boot/efi vfat umask=0077 0 1
EOF
echo bootlab-debian-uefi > "$root/etc/hostname"
cat > "$root/etc/systemd/system/bootlab-marker.service" <<EOF
[Unit]
Description=BootLab boot marker (after /boot/efi is mounted)
After=basic.target local-fs.target
RequiresMountsFor=/boot/efi

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'm=\$(findmnt -n -o SOURCE,FSTYPE,UUID /boot/efi); echo "BOOTLAB-ESP /boot/efi: \$m" > /dev/ttyS0; case "\$m" in *" vfat "*) echo "$MARKER" > /dev/ttyS0;; esac; systemctl --no-block poweroff'

[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/bootlab-marker.service "$root/etc/systemd/system/multi-user.target.wants/bootlab-marker.service"
# No getty on the serial line: the console stays the marker's.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
rm -f "$root/etc/machine-id"; : > "$root/etc/machine-id"

rm -f "$work/volume.raw"
E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -t ext4 -b 4096 -L bootlab-debian -U "$UUID" -E hash_seed=$HASH_SEED \
  -d "$root" "$work/volume.raw" $SIZE
# What the volume really holds (debootstrap installs the suite's versions, which can be older
# than this host's apt candidates the cache key uses, e.g. its kernel ABI).
{ dpkg-query -W -f='debootstrap ${Version}\n' debootstrap
  dpkg-query -W -f='e2fsprogs ${Version}\n' e2fsprogs
  chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' ${PKGS//,/ } "linux-image-$KV"; } > "$work/versions.txt"
echo "$KV" > "$work/kernel-version"
echo "$ESP_UUID" > "$work/esp-uuid"
mv "$work/volume.raw" "$work/versions.txt" "$work/kernel-version" "$work/esp-uuid" "$dir/"
touch "$dir/done"
echo "$dir/volume.raw"
