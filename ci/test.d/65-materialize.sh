#!/usr/bin/env bash
# The replacement file, live (issue 13; docs/replacement-file.md), end to end with real FUSE and
# real QEMU (TCG): a guest boots writable through `mount --writable --materialize` while the fill
# runs (throttled) and writes a file; the fill completes; finalize; QEMU boots the finalized
# vm.vhdx directly and the file is there; qemu-img compare finds it identical to what the filter
# served at switch-over. Without writes the finalized file equals `convert -O vhdx` byte for byte
# (both carry the pointer marked materialized); the same for every other native format. kill -9 at explicit fault points (early fill, mid fill
# with writes in flight, verification, switch-over, each finalize step): every restart resumes,
# re-copies nothing recorded, loses no acknowledged write, ends with the right file. The backup
# is never written. (The simulated power cut is ExposureTests/ReplacementPowerCutTests.)
# Tier: CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
swift build --product bootlab 2>&1 | quiet
B="$PWD/.build/debug/bootlab"
W=$(mktemp -d /tmp/bootlab-mat.XXXXXX)
cleanup() {
  fusermount3 -u "$W/mnt" 2>/dev/null || true
  [ -n "${MOUNT_PID:-}" ] && kill -9 "$MOUNT_PID" 2>/dev/null || true
  [ -n "${KEEP_W:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "65-materialize: FAIL: $*" >&2; exit 1; }
step() { echo "65-materialize: $*"; }
cd "$W"
mkdir mnt
jget() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
wait_mount() { for _ in $(seq 400); do mountpoint -q mnt && return 0; sleep 0.05; done; fail "mount did not come up: $(cat mount.log)"; }
wait_unmounted() { for _ in $(seq 200); do mountpoint -q mnt || return 0; sleep 0.05; done; fusermount3 -u mnt || true; }
killed_mount() { # after kill -9 of the mount
  wait "$MOUNT_PID" 2>/dev/null || true; MOUNT_PID=
  fusermount3 -u mnt 2>/dev/null || true; wait_unmounted
}

# --- A tiny Linux that writes a file: generic kernel, busybox initramfs with virtio_blk + vfat.
KV=$(ls /lib/modules | grep -- '-amd64$' | sort -V | tail -1)
MOD=/lib/modules/$KV
ir=$W/ir; mkdir -p "$ir/bin" "$ir/proc" "$ir/sys" "$ir/dev" "$ir/mnt" "$ir/lib/modules/$KV"
cp /bin/busybox "$ir/bin/busybox"
for m in virtio_pci virtio_blk vfat nls_cp437 nls_ascii; do modprobe --show-depends -S "$KV" "$m"; done | awk '$1=="insmod"{print $2}' | awk '!s[$0]++' > mods
while read -r p; do cp "$p" "$ir/lib/modules/$KV/"; basename "$p"; done < mods > "$ir/modules"
cat > "$ir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
KV=$(uname -r)
while read -r m; do insmod "/lib/modules/$KV/$m" 2>/dev/null; done < /modules
i=0; while [ ! -b /dev/vda1 ] && [ $i -lt 20 ]; do sleep 0.5; i=$((i+1)); done
mount -t vfat /dev/vda1 /mnt || { echo "BOOTLAB-ROOT-MISSING"; poweroff -f; }
if [ -f /mnt/guest.txt ]; then echo "BOOTLAB-GUEST-FILE $(cat /mnt/guest.txt)"; else
  echo "written by the guest while the fill ran" > /mnt/guest.txt; sync; echo "BOOTLAB-GUEST-WROTE"; fi
umount /mnt; sync
echo "BOOTLAB-MARKER booted"
poweroff -f
INIT
chmod 755 "$ir/init"
(cd "$ir" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > initrd.gz
printf 'DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL /vmlinuz\n  INITRD /initrd.gz\n  APPEND console=ttyS0 quiet panic=-1\n' > syslinux.cfg
truncate -s 40M part.img
mkfs.fat -F 32 -h 2048 -i 1234ABCD part.img >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i part.img -m "/boot/vmlinuz-$KV" ::/vmlinuz
mcopy -i part.img -m initrd.gz syslinux.cfg ::/
syslinux --install part.img
truncate -s 48M disk.raw
printf 'label: dos\nlabel-id: 0x0b007002\nstart=2048, size=81920, type=c, bootable\n' | sfdisk -q disk.raw
dd if=/usr/lib/syslinux/mbr/mbr.bin of=disk.raw bs=440 count=1 conv=notrunc status=none
dd if=part.img of=disk.raw bs=1M seek=1 conv=notrunc status=none
printf 'mat passphrase' > pass
mkdir base
"$B" backup create disk.raw base/vm.bli --partition 1 --compress zstd --encrypt --passphrase-file pass --scrypt-log-n 10 --seed mat >/dev/null
BLI_SHA=$(sha256sum base/vm.bli | cut -d' ' -f1)
fresh() { # DIR: a directory with the backup (hard link: same bytes, never written) and a new plugin
  rm -rf "$1"; mkdir -p "$1"; ln base/vm.bli "$1/vm.bli"
  "$B" expose "$1/vm.bli" --out "$1/vm.vhdx" --passphrase-file pass >/dev/null
}
boot() { # DRIVE-OPTIONS LOG
  timeout 180 qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot -monitor none -display none \
    -serial "file:$2" -drive "$1,if=virtio" >/dev/null 2>&1 || true
}

# --- 1. Boot writable through mount --writable --materialize while the fill runs.
fresh p1
"$B" convert -O vhdx --passphrase-file pass p1/vm.vhdx converted.vhdx
"$B" mount p1 mnt --writable --materialize --rate 256K --passphrase-file pass --stats-file stats.json > mount.log 2>&1 & MOUNT_PID=$!
wait_mount
boot "file=mnt/vm.vhdx,format=vhdx,cache=writeback" boot1.log
grep -aq "BOOTLAB-GUEST-WROTE" boot1.log || fail "the guest did not write through the mount: $(tail -5 boot1.log)"
"$B" status p1/vm.vhdx --json > st1.json
[ "$(jget st1.json phase)" = filling ] || fail "the boot did not happen mid-fill: $(cat st1.json)"
step "guest booted and wrote its file mid-fill ($(jget st1.json doneBytes)/$(jget st1.json totalBytes) bytes filled)"
kill -USR1 "$MOUNT_PID"; sleep 0.3
grep -q '"materializations"' stats.json || fail "--stats-file has no materializations"
# Let the fill finish at full speed: restart the mount without --rate (resumes).
kill "$MOUNT_PID"; wait "$MOUNT_PID" || fail "mount exited non-zero on SIGTERM: $(cat mount.log)"; MOUNT_PID=; wait_unmounted
"$B" mount p1 mnt --writable --materialize --passphrase-file pass > mount.log 2>&1 & MOUNT_PID=$!
wait_mount
for _ in $(seq 600); do "$B" status p1/vm.vhdx --json > st.json; [ "$(jget st.json phase)" = complete ] && break; sleep 0.1; done
[ "$(jget st.json phase)" = complete ] || fail "the fill did not complete: $(cat st.json)"
"$B" finalize p1/vm.vhdx 2>finalize.err && fail "finalize ran under a writable mount"
grep -q "another process" finalize.err || fail "finalize under a writable mount: $(cat finalize.err)"
qemu-img convert -f vhdx -O raw mnt/vm.vhdx served-at-switch.raw
kill "$MOUNT_PID"; wait "$MOUNT_PID" || fail "mount exited non-zero"; MOUNT_PID=; wait_unmounted
"$B" finalize p1/vm.vhdx --json > fin1.json
[ -f p1/vm.vhdx.plugin ] || fail "the old plugin was not kept"
qemu-img check -f vhdx p1/vm.vhdx >/dev/null || fail "qemu-img check of the finalized file"
qemu-img compare -f vhdx -F raw p1/vm.vhdx served-at-switch.raw >/dev/null || fail "finalized file differs from what the filter served"
"$B" info p1/vm.vhdx | grep -q backupPath && fail "the finalized file is still taken for a plugin"
boot "file=p1/vm.vhdx,format=vhdx,snapshot=on" boot2.log
grep -aq "BOOTLAB-GUEST-FILE written by the guest while the fill ran" boot2.log || fail "the guest's file is not in the finalized disk: $(tail -5 boot2.log)"
step "finalized vm.vhdx boots directly in QEMU with the guest's file; identical to what was served at switch-over"

# --- 2. Without writes: finalized == convert -O vhdx, byte for byte (convert marks its copy's
# pointer materialized the same way finalize does), and neither is taken for a plugin.
fresh p2
"$B" materialize p2/vm.vhdx --passphrase-file pass --finalize >/dev/null
cmp p2/vm.vhdx converted.vhdx || fail "finalized differs from convert -O vhdx of the same plugin"
python3 - p2/vm.vhdx <<'PY' || fail "the finalized file's pointer is not marked materialized"
import sys
a = open(sys.argv[1], 'rb').read(4 << 20)
assert b'BLMAT\0\0\1' in a and b'BLPTR\0\0\1' not in a
PY
step "no writes: finalized == convert -O vhdx (cmp), the pointer marked materialized"

# --- 3. kill -9 at explicit points; every restart resumes without re-copying.
fresh p3
set +e; "$B" materialize p3/vm.vhdx --passphrase-file pass --chunk-size 256K --inject-fault kill:fill-chunk:3 >/dev/null 2>&1; rc=$?; set -e
[ "$rc" = 137 ] || fail "kill:fill-chunk:3 did not kill (rc $rc)"
"$B" status p3/vm.vhdx --json > st.json; before=$(jget st.json filledChunks); chunks=$(jget st.json chunks)
[ "$before" -ge 3 ] && [ "$before" -lt "$chunks" ] || fail "early kill left $before of $chunks chunks"
set +e; "$B" materialize p3/vm.vhdx --passphrase-file pass --inject-fault kill:fill-written:1 >/dev/null 2>&1; rc=$?; set -e
[ "$rc" = 137 ] || fail "kill:fill-written:1 did not kill (rc $rc)"
"$B" status p3/vm.vhdx --json > st.json; mid=$(jget st.json filledChunks)
[ "$mid" = "$before" ] || fail "chunks written but not synced were recorded ($before -> $mid)"
set +e; "$B" materialize p3/vm.vhdx --passphrase-file pass --inject-fault kill:verify:5 >/dev/null 2>&1; rc=$?; set -e
[ "$rc" = 137 ] || fail "kill:verify:5 did not kill (rc $rc)"
"$B" status p3/vm.vhdx --json > st.json; [ "$(jget st.json filledChunks)" = "$chunks" ] || fail "verify kill: not all filled"
set +e; "$B" materialize p3/vm.vhdx --passphrase-file pass --inject-fault kill:switch >/dev/null 2>&1; rc=$?; set -e
[ "$rc" = 137 ] || fail "kill:switch did not kill (rc $rc)"
"$B" materialize p3/vm.vhdx --passphrase-file pass --json > m.json
[ "$(jget m.json copiedChunks)" = 0 ] || fail "chunks were copied again after kills: $(cat m.json)"
[ "$(jget m.json phase)" = complete ] || fail "not complete: $(cat m.json)"
step "kills at fill-chunk:3 ($before chunks kept), fill-written:1 (written, unrecorded: still $mid), verify:5, switch: resumed, 0 chunks copied again"
for point in finalize-built finalize-linked finalize-renamed; do
  set +e; "$B" finalize p3/vm.vhdx --inject-fault "kill:$point" >/dev/null 2>&1; rc=$?; set -e
  [ "$rc" = 137 ] || [ "$point" != finalize-built ] || fail "kill:$point did not kill (rc $rc)"
  # Either the plugin or the native file, never a mix.
  if "$B" info p3/vm.vhdx | grep -q backupPath; then
    rm -f a.raw b.raw
    "$B" convert -O raw --passphrase-file pass p3/vm.vhdx a.raw; qemu-img convert -f vhdx -O raw converted.vhdx b.raw
    cmp -s a.raw b.raw || fail "after kill:$point the plugin serves other bytes"
  else
    qemu-img compare -f vhdx -F vhdx p3/vm.vhdx converted.vhdx >/dev/null || fail "after kill:$point vm.vhdx is a broken native file"
  fi
done
"$B" finalize p3/vm.vhdx >/dev/null
qemu-img compare -f vhdx -F vhdx p3/vm.vhdx converted.vhdx >/dev/null || fail "finalize after kills"
cmp -s p3/vm.vhdx p2/vm.vhdx || fail "finalize after kills differs from an uninterrupted one"
step "kills at finalize-built, finalize-linked, finalize-renamed: old or new arrangement, then the same file"

# --- 4. Mid-fill kill of a writable mount with acknowledged writes: none lost.
fresh p4
"$B" mount p4 mnt --writable --materialize --rate 2M --materialize-fault kill:fill-chunk:14 --passphrase-file pass > mount.log 2>&1 & MOUNT_PID=$!
wait_mount
PS=$(python3 -c 'import json,subprocess,sys; print(8<<20)')
head -c 300000 /dev/urandom > w1.bin
dd if=w1.bin of=mnt/vm.vhdx bs=4096 seek=$((PS / 4096)) conv=notrunc,fsync status=none
"$B" status p4/vm.vhdx --json > st.json
[ "$(jget st.json phase)" = filling ] || fail "writes were not in flight mid-fill"
for _ in $(seq 300); do kill -0 "$MOUNT_PID" 2>/dev/null || break; sleep 0.1; done
killed_mount
"$B" status p4/vm.vhdx --json > st.json; k=$(jget st.json filledChunks)
"$B" mount p4 mnt --writable --materialize --passphrase-file pass > mount.log 2>&1 & MOUNT_PID=$!
wait_mount
cmp <(dd if=mnt/vm.vhdx bs=4096 skip=$((PS / 4096)) count=$(( (300000 + 4095) / 4096 )) status=none | head -c 300000) w1.bin || fail "an acknowledged write was lost across kill -9"
for _ in $(seq 600); do "$B" status p4/vm.vhdx --json > st.json; [ "$(jget st.json phase)" = complete ] && break; sleep 0.1; done
kill "$MOUNT_PID"; wait "$MOUNT_PID" || true; MOUNT_PID=; wait_unmounted
"$B" finalize p4/vm.vhdx >/dev/null
cmp <(dd if=p4/vm.vhdx bs=4096 skip=$((PS / 4096)) count=74 status=none | head -c 300000) w1.bin || fail "the write is not in the finalized file"
step "kill -9 of a writable mount at fill-chunk:14 ($k chunks kept) with acknowledged writes: none lost, in the final file"

# --- 5. A VM keeps running across the switch: read-only mount --materialize --finalize.
fresh p5
"$B" mount p5 mnt --materialize --finalize --rate 4M --passphrase-file pass > mount.log 2>&1 & MOUNT_PID=$!
wait_mount
boot "file=mnt/vm.vhdx,format=vhdx,snapshot=on" boot5.log
grep -aq "BOOTLAB-MARKER booted" boot5.log && grep -aq "BOOTLAB-GUEST-WROTE" boot5.log || fail "the VM did not run across the switch: $(tail -5 boot5.log)"
"$B" status p5/vm.vhdx --json > st.json
[ "$(jget st.json phase)" = finalized ] || fail "the mount did not finalize on completion: $(cat st.json) $(cat mount.log)"
kill "$MOUNT_PID"; wait "$MOUNT_PID" || fail "mount exited non-zero: $(cat mount.log)"; MOUNT_PID=; wait_unmounted
cmp -s p5/vm.vhdx p2/vm.vhdx || fail "finalized on completion differs from materialize --finalize"
step "a VM booted through mount --materialize --finalize kept running across the switch (finalized mid-boot)"

# --- 6. Every other native format: the pointer retired where the format keeps it (VMDK
# descriptor key, qcow2 extension area, VDI/VHD pointer area, fixed VHD sidecar tag in the
# checksummed footer), the identifying bytes written last; checked by qemu-img, not by us.
"$B" convert -O raw --passphrase-file pass p2/vm.vhdx.plugin virtual.raw
for spec in vmdk: qcow2: vdi: vhd:dynamic vhd:fixed; do
  f=${spec%%:*}; sub=${spec#*:}; d=f-$f$sub; qf=$f; [ "$f" = vhd ] && qf=vpc
  rm -rf "$d"; mkdir "$d"; ln base/vm.bli "$d/vm.bli"
  "$B" expose "$d/vm.bli" --out "$d/vm.$f" --format "$f" ${sub:+-o subformat=$sub} --passphrase-file pass >/dev/null
  "$B" convert -O "$f" --passphrase-file pass "$d/vm.$f" "$d/converted.$f"
  "$B" materialize "$d/vm.$f" --passphrase-file pass --stop-after 8M >/dev/null
  [ "$(qemu-img info --output=json "$d/vm.$f.replacement" | python3 -c 'import json,sys; print(json.load(sys.stdin)["format"])')" = raw ] \
    || fail "$f$sub: the half-filled replacement is taken for a disk"
  "$B" info "$d/vm.$f.replacement" | grep -q '^format: raw' || fail "$f$sub: bootlab detects a format in the half-filled replacement"
  "$B" materialize "$d/vm.$f" --passphrase-file pass --json > "$d/m.json"
  [ "$(jget "$d/m.json" copiedChunks)" -lt "$(jget "$d/m.json" chunks)" ] || fail "$f$sub: the resumed fill copied every chunk again"
  "$B" finalize "$d/vm.$f" >/dev/null
  qemu-img info --output=json -f "$qf" "$d/vm.$f" > "$d/info.json"
  [ "$(jget "$d/info.json" format)" = "$qf" ] && [ "$(jget "$d/info.json" virtual-size)" = "$(stat -c %s virtual.raw)" ] \
    || fail "$f$sub: qemu-img info: $(cat "$d/info.json")"
  if [ "$qf" = vpc ]; then "$B" check "$d/vm.$f" >/dev/null || fail "$f$sub: bootlab check"  # QEMU's vpc has no check
  else qemu-img check -f "$qf" "$d/vm.$f" >/dev/null || fail "$f$sub: qemu-img check"; fi
  qemu-img compare -f "$qf" -F raw "$d/vm.$f" virtual.raw >/dev/null || fail "$f$sub: the finalized file differs from the stream"
  cmp "$d/vm.$f" "$d/converted.$f" || fail "$f$sub: finalized differs from convert -O $f of the same plugin"
  [ "$("$B" status "$d/vm.$f" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["phase"])')" = finalized ] \
    || fail "$f$sub: the finalized file is still taken for a plugin"
  "$B" info "$d/vm.$f.plugin" | grep -q backupPath || fail "$f$sub: the old plugin is not kept as a plugin"
  rm -rf "$d"
done
step "vmdk, qcow2, vdi, vhd dynamic and fixed: finalized after an interrupted fill; qemu-img info/check/compare, == convert (cmp), not a plugin, old plugin kept"

[ "$(sha256sum base/vm.bli | cut -d' ' -f1)" = "$BLI_SHA" ] || fail "the backup was written"
step "ok (the backup was never written)"
