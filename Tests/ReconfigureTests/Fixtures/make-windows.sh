#!/bin/bash
# make-windows.sh OUT.raw SYSTEM BCD
# An NTFS volume as a Windows backup would hold it (hidden sectors 63: the source disk put it at
# LBA 63, signature 0x11111111 in its hives) placed on a new disk at LBA 2048 with signature
# 0x0B00C0DE: what the composed disk looks like before reconfiguration.
set -euo pipefail
out=$1 system=$2 bcd=$3
work=$(mktemp -d); trap 'umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
part=$work/part.img
truncate -s 16M "$part"
mkntfs -F -f -q -p 63 -H 255 -S 63 -L WIN "$part"
mkdir "$work/mnt"
ntfs-3g "$part" "$work/mnt" </dev/null >/dev/null 2>&1
mkdir -p "$work/mnt/Windows/System32/config" "$work/mnt/Boot"
cp "$system" "$work/mnt/Windows/System32/config/SYSTEM"
cp "$bcd" "$work/mnt/Boot/BCD"
echo "left alone" > "$work/mnt/Windows/untouched.txt"
umount "$work/mnt"
rm -f "$out"; truncate -s 20M "$out"
printf 'label: dos\nlabel-id: 0x0b00c0de\nstart=2048, type=7, bootable\n' | sfdisk -q "$out"
dd if="$part" of="$out" bs=1M seek=1 conv=notrunc,sparse status=none
