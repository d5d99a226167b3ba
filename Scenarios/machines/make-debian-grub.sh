#!/bin/bash
# make-debian-grub.sh  →  prints the path of a cached Debian ext4 volume image (volume.raw)
# A real distribution for the GRUB must-show (docs/reconfigure.md, platform-notes):
# debootstrap --variant=minbase bookworm with the cloud kernel and grub-pc-bin, a hand-written
# /boot/grub/grub.cfg (root=UUID=…, console=ttyS0, no_timer_check: TCG on a loaded host fails the
# kernel's IO-APIC timer check), fstab by UUID, and a systemd oneshot unit that
# prints the marker on /dev/ttyS0 and powers off. It is only a *volume*: no boot code anywhere.
#
# Cached under $BOOTLAB_CACHE/debian-grub/<key>/ (default /var/tmp/bootlab-cache), where <key>
# hashes this script, debootstrap's version and the mirror's candidate versions of the included
# packages; a rebuild happens only when one of them changes (~50 s debootstrap + ~10 s mke2fs).
set -euo pipefail
CACHE=${BOOTLAB_CACHE:-/var/tmp/bootlab-cache}
MIRROR=${BOOTLAB_DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PKGS=linux-image-cloud-amd64,grub-pc-bin,systemd-sysv,udev,initramfs-tools,kmod
UUID=b0071ab0-6e1b-4d2e-9a5c-0000000d3b12
HASH_SEED=b0071ab0-6e1b-4d2e-9a5c-00000000feed
MARKER="BOOTLAB-MARKER debian-grub booted"
SIZE=512M

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
key=$( { sha256sum < "$0"; versions; echo "$MIRROR"; } | sha256sum | cut -c1-24)
dir=$CACHE/debian-grub/$key
mkdir -p "$CACHE/debian-grub"
# One builder at a time (parallel test processes share the cache).
exec 9>"$CACHE/debian-grub/.lock"
flock 9
if [ -f "$dir/volume.raw" ] && [ -f "$dir/done" ]; then echo "$dir/volume.raw"; exit 0; fi

mkdir -p "$dir"
work=$(mktemp -d /var/tmp/bootlab-debian-XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
debootstrap --variant=minbase --include=$PKGS $SUITE "$root" "$MIRROR" > "$work/debootstrap.log" 2>&1 \
  || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
chroot "$root" apt-get clean
KV=$(ls "$root/lib/modules" | sort -V | tail -1)
[ -f "$root/boot/vmlinuz-$KV" ] && [ -f "$root/boot/initrd.img-$KV" ] || { echo "no kernel/initrd for $KV" >&2; exit 1; }
[ -f "$root/usr/lib/grub/i386-pc/boot.img" ] || { echo "grub-pc-bin modules missing" >&2; exit 1; }

mkdir -p "$root/boot/grub"
cat > "$root/boot/grub/grub.cfg" <<EOF
set timeout=0
set default=0
menuentry 'Debian GNU/Linux (BootLab)' {
  insmod part_msdos
  insmod ext2
  search --no-floppy --fs-uuid --set=root $UUID
  linux /boot/vmlinuz-$KV root=UUID=$UUID ro console=ttyS0 quiet no_timer_check
  initrd /boot/initrd.img-$KV
}
EOF
printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$UUID" > "$root/etc/fstab"
echo bootlab-debian > "$root/etc/hostname"
cat > "$root/etc/systemd/system/bootlab-marker.service" <<EOF
[Unit]
Description=BootLab boot marker
After=basic.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "$MARKER" > /dev/ttyS0; systemctl --no-block poweroff'

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
versions > "$work/versions.txt"
echo "$KV" > "$work/kernel-version"
mv "$work/volume.raw" "$work/versions.txt" "$work/kernel-version" "$dir/"
touch "$dir/done"
echo "$dir/volume.raw"
