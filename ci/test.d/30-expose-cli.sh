#!/usr/bin/env bash
# End-to-end through the CLI, with real tools: a volume-only, compressed, encrypted backup is
# exposed; info/check/convert understand backups and plugin files; FUSE and NBD serve bytes equal
# to the original disk and to the materialized replacement file; metadata reads never open the
# backup; the backup is never written. (Boots of exposed backups run in the lab suite.)
# Tier: CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
# Build (a no-op after ci/setup) so a stale binary never runs; a failed build fails this check.
swift build 2>&1 | quiet
B="$PWD/.build/debug/bootlab"
W=$(mktemp -d /tmp/bootlab-cli.XXXXXX)
cleanup() {
  fusermount3 -u "$W/mnt" 2>/dev/null || true
  [ -n "${SERVE_PID:-}" ] && kill "$SERVE_PID" 2>/dev/null || true
  [ -n "${MOUNT_PID:-}" ] && kill "$MOUNT_PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "30-expose-cli: FAIL: $*" >&2; exit 1; }
# SIGTERM is bootlab serve's clean shutdown: anything but exit 0 is a failure.
stop_serve() {
  kill "$SERVE_PID"
  local status=0; wait "$SERVE_PID" || status=$?
  SERVE_PID=
  [ "$status" = 0 ] || fail "bootlab serve exited $status on SIGTERM: $(cat serve.log)"
}
cd "$W"
mkdir plug mnt

# A 64 MiB disk: MBR, FAT32 partition at LBA 2048 with a few files, a hole in the middle.
truncate -s 64M disk.raw
printf 'label: dos\nlabel-id: 0x0badcafe\nstart=2048, size=110592, type=c, bootable\n' | sfdisk -q disk.raw
# The original machine booted through syslinux's MBR, the boot code exposure synthesizes.
dd if=/usr/lib/syslinux/mbr/mbr.bin of=disk.raw bs=440 count=1 conv=notrunc status=none
truncate -s $((110592 * 512)) part.raw
mkfs.fat -F 32 -h 2048 -i 1234abcd part.raw >/dev/null
head -c 3000000 /dev/urandom > big.bin
mcopy -i part.raw big.bin ::/big.bin
dd if=part.raw of=disk.raw bs=1M seek=1 conv=notrunc status=none
printf 'lab passphrase' > pass

"$B" backup create disk.raw plug/vm.bli --partition 1 --compress zstd --encrypt --passphrase-file pass --scrypt-log-n 10 --seed cli >/dev/null
BLI_SHA=$(sha256sum plug/vm.bli | cut -d' ' -f1)

"$B" info plug/vm.bli | grep -c "format: bootlab-backup-image" >/dev/null || fail "info does not recognize a backup image"
"$B" check --passphrase-file pass plug/vm.bli >/dev/null || fail "check of a clean backup"
"$B" expose plug/vm.bli --out plug/vm.vhdx --passphrase-file pass --json > expose.json
grep -q '"composition" : "volume"' expose.json || fail "expose did not compose a volume: $(cat expose.json)"
"$B" info plug/vm.vhdx | grep -c "backupPath: vm.bli" >/dev/null || fail "info does not show the plugin pointer"
qemu-img info plug/vm.vhdx | grep -c "virtual size: 64 MiB" >/dev/null || fail "qemu-img does not read the plugin's metadata"
"$B" check plug/vm.vhdx >/dev/null || fail "bootlab check of the plugin"

# convert: backup -> raw volume; plugin -> raw disk (== original); plugin -> VHDX (replacement file).
"$B" convert -O raw --passphrase-file pass plug/vm.bli vol.raw
cmp vol.raw part.raw || fail "backup -> raw is not the volume"
"$B" convert -O raw --passphrase-file pass plug/vm.vhdx whole.raw
cmp whole.raw disk.raw || fail "plugin -> raw is not the original disk"
"$B" convert -O vhdx --passphrase-file pass plug/vm.vhdx replacement.vhdx
qemu-img compare -f raw -F vhdx disk.raw replacement.vhdx >/dev/null || fail "replacement file differs from the disk"

# A differencing child of the plugin (the Hyper-V-side write path) reads through to the backup.
"$B" create -f vhdx -b vm.vhdx plug/child.avhdx >/dev/null
"$B" info plug/child.avhdx | grep -c "type: differencing" >/dev/null || fail "create -b did not make a differencing child"
"$B" convert -O raw --passphrase-file pass plug/child.avhdx child.raw
cmp child.raw disk.raw || fail "a child of the plugin does not read its parent's disk"
rm plug/child.avhdx

# FUSE: metadata reads open the backup zero times; the stream equals the replacement file.
"$B" mount plug mnt --passphrase-file pass --stats-file stats.json > mount.log 2>&1 &
MOUNT_PID=$!
for _ in $(seq 100); do mountpoint -q mnt && break; sleep 0.1; done
mountpoint -q mnt || fail "mount did not come up: $(cat mount.log)"
stat mnt/vm.vhdx >/dev/null
qemu-img info mnt/vm.vhdx >/dev/null
kill -USR1 $MOUNT_PID; sleep 0.5
python3 - stats.json <<'PY' || fail "metadata reads opened the backup: $(cat stats.json)"
import json, sys
s = json.load(open(sys.argv[1]))["sources"][0]
assert s["backup"]["opens"] == 0, s
PY
# The materialized file is the stream byte for byte except the pointer's 3-byte mark
# (BLPTR -> BLMAT, as finalize does): BootLab no longer takes it for a plugin.
diffs=$( (cmp -l mnt/vm.vhdx replacement.vhdx || true) | wc -l)
[ "$diffs" = 3 ] || fail "FUSE stream differs from the materialized replacement file in $diffs bytes (only the 3-byte mark may differ)"
if "$B" info replacement.vhdx | grep -q "^plugin:"; then fail "the materialized replacement file is still taken for a plugin"; fi
qemu-img compare -f raw -F vhdx disk.raw mnt/vm.vhdx >/dev/null || fail "FUSE disk differs from the original"
qemu-img check -f vhdx mnt/vm.vhdx >/dev/null || fail "qemu-img check of the FUSE file"
"$B" check mnt/vm.vhdx >/dev/null || fail "bootlab check of the FUSE file"
vhdiinfo mnt/vm.vhdx | grep -c "Media size.*67108864" >/dev/null || fail "libvhdi does not read the exposed VHDX"
kill -USR1 $MOUNT_PID; sleep 0.5
python3 - stats.json <<'PY' || fail "payload reads did not open the backup exactly once: $(cat stats.json)"
import json, sys
s = json.load(open(sys.argv[1]))["sources"][0]
assert s["backup"]["opens"] == 1 and s["backup"]["bytesRead"] > 0, s
PY
fusermount3 -u mnt
status=0; wait $MOUNT_PID || status=$?
MOUNT_PID=
[ "$status" = 0 ] || fail "bootlab mount exited $status after a clean unmount: $(cat mount.log)"

# NBD: the same VHDX bytes, and the raw virtual disk with --raw; socket mode 0600.
"$B" serve plug/vm.vhdx --socket "$W/s.sock" --passphrase-file pass > serve.log 2>&1 &
SERVE_PID=$!
for _ in $(seq 100); do [ -S s.sock ] && break; sleep 0.1; done
[ "$(stat -c %a s.sock)" = 600 ] || fail "NBD socket is not 0600"
qemu-img compare -f raw disk.raw "json:{\"driver\":\"vhdx\",\"file\":{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"$W/s.sock\"}}}" >/dev/null \
  || fail "NBD-served VHDX differs from the original disk"
stop_serve
rm -f s.sock
"$B" serve plug/vm.vhdx --raw --socket "$W/s.sock" --passphrase-file pass > serve.log 2>&1 &
SERVE_PID=$!
for _ in $(seq 100); do [ -S s.sock ] && break; sleep 0.1; done
qemu-img compare -f raw -F raw disk.raw "nbd+unix:///?socket=$W/s.sock" >/dev/null || fail "NBD --raw differs from the original disk"
stop_serve

# A plugin whose backup was replaced serves nothing.
cp plug/vm.bli keep.bli
"$B" backup create disk.raw other.bli --partition 1 --compress zstd --seed other >/dev/null
cp other.bli plug/vm.bli
if "$B" convert -O raw plug/vm.vhdx bad.raw 2>/dev/null; then fail "a replaced backup was served"; fi
cp keep.bli plug/vm.bli

[ "$(sha256sum plug/vm.bli | cut -d' ' -f1)" = "$BLI_SHA" ] || fail "the backup changed"

# A volume set (docs/formats/gpt.md): two partitions of an sgdisk-made GPT disk backed up as one
# .bli each plus a manifest, exposed as one disk: served over NBD it equals the original disk,
# sgdisk judges it clean; a missing member is refused, naming it.
mkdir set
truncate -s 32M gpt.raw
sgdisk -U 5C4B3A29-1807-4F6E-9D5C-4B3A29180706 -n 1:2048:18431 -t 1:ef00 -c 1:ESP \
  -n 2:20480:32767 -t 2:8300 -c 2:root gpt.raw >/dev/null
head -c 1000000 /dev/urandom | dd of=gpt.raw bs=512 seek=2048 conv=notrunc status=none
head -c 500000 /dev/urandom | dd of=gpt.raw bs=512 seek=20480 conv=notrunc status=none
"$B" backup create gpt.raw set/vm.blset --partition 1 --partition 2 --seed cli-set >/dev/null
[ -f set/vm.p1.bli ] && [ -f set/vm.p2.bli ] || fail "the volume set's images are missing"
"$B" info set/vm.blset | grep -q "^format: bootlab-volume-set" || fail "bootlab info does not describe the manifest"
"$B" expose set/vm.blset --out set/vm.vhdx >/dev/null
"$B" serve set/vm.vhdx --raw --socket "$W/set.sock" > serve.log 2>&1 &
SERVE_PID=$!
for _ in $(seq 100); do [ -S set.sock ] && break; sleep 0.1; done
qemu-img compare -f raw -F raw gpt.raw "nbd+unix:///?socket=$W/set.sock" >/dev/null || fail "the volume set served over NBD differs from the original disk"
stop_serve
"$B" convert -O raw set/vm.vhdx set.raw
sgdisk -v set.raw | grep -q "No problems found" || fail "sgdisk -v finds problems in the composed volume set"
# bootlab info shows the GPT (issue 14): a member records its partition, the composed disk's table.
"$B" info set/vm.p2.bli > info-p2.txt
for l in "partitionScheme: gpt" "gptDiskGUID: 5C4B3A29-1807-4F6E-9D5C-4B3A29180706" "gptPartitionName: root" "partitionStartLBA: 20480"; do
  grep -q "$l" info-p2.txt || fail "bootlab info of a GPT member lacks '$l': $(cat info-p2.txt)"
done
"$B" info set.raw > info-set.txt
for l in "  scheme: gpt" "  disk guid: 5C4B3A29-1807-4F6E-9D5C-4B3A29180706" "      name: ESP" "      name: root" "      start lba: 20480"; do
  grep -qx "$l" info-set.txt || fail "bootlab info of the composed disk lacks '$l': $(cat info-set.txt)"
done
mv set/vm.p2.bli set/away.bli
if "$B" convert -O raw set/vm.vhdx bad-set.raw 2> set.err; then fail "a volume set with a missing member was served"; fi
grep -q "volume set member .*vm.p2.bli" set.err || fail "missing member not named: $(cat set.err)"
echo "30-expose-cli: every step passed"
