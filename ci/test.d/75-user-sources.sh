#!/usr/bin/env bash
# A user's own backup format as the source (docs/bring-your-own-format.md), through the CLI and
# the lab, with real tools: the example vendor format (examples/vendor-format: a Python backup
# tool and its nbdkit Python plugin) is exposed with `expose --source nbdkit:…`; `serve` refuses
# it without --allow-source-plugin and serves it with; qemu-img info does not start the source;
# qemu-img compare finds the volume at its partition; a changed backup is refused; then
# `bootlab lab run` takes the example through generate → back up → expose → boot → validate.
# Also a 10 s libFuzzer run of the pointer/source-spec decoder (FuzzPluginPointer).
# Tier: CI (≈ 1 min with warm caches). BOOTLAB_USER_SOURCES_FULL=1 also boots the qcow2 and VMDK
# scenarios of examples/vendor-format (≈ +1.5 min).
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
swift build 2>&1 | quiet
REPO=$PWD
B="$REPO/.build/debug/bootlab"
W=$(mktemp -d /tmp/bootlab-user-sources.XXXXXX)
cleanup() {
  [ -n "${SERVE_PID:-}" ] && kill "$SERVE_PID" 2>/dev/null || true
  [ -n "${FUZZ_PID:-}" ] && kill "$FUZZ_PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "75-user-sources: FAIL: $*" >&2; exit 1; }
cd "$W"
mkdir plug

# A volume (ext4 with a file) backed up by the vendor tool; its plugin copied beside the backup.
truncate -s 32M vol.img
mkdir content && echo "vendor format payload" > content/hello.txt
mke2fs -q -t ext4 -b 4096 -U 0f0f0f0f-1111-2222-3333-444444444444 -E hash_seed=0f0f0f0f-1111-2222-3333-444444444444 -d content vol.img
python3 "$REPO/examples/vendor-format/vendor-backup.py" backup vol.img plug/vm.vbk
cp "$REPO/examples/vendor-format/vendor-nbdkit.py" plug/
sha_before=$(sha256sum plug/vm.vbk | cut -d' ' -f1)

# The plugin records a marker when nbdkit loads it (deferred-open check below).
cd plug
"$B" expose --source nbdkit:python:./vendor-nbdkit.py:file=vm.vbk --out vm.vhdx > ../expose.out || fail "expose: $(cat ../expose.out)"
cd ..
grep -q "volume composition" expose.out || fail "expose: no volume composition: $(cat expose.out)"
qemu-img info plug/vm.vhdx | grep -q "file format: vhdx" || fail "the plugin is not a valid VHDX"

# Without the allowance, serve refuses (a source spec is code that runs).
status=0; "$B" serve plug/vm.vhdx --socket "$W/s.sock" > refused.out 2>&1 || status=$?
[ "$status" != 0 ] || fail "serve accepted a plugin that runs nbdkit's python plugin without --allow-source-plugin"
grep -q -- "--allow-source-plugin python" refused.out || fail "the refusal does not say what to allow: $(cat refused.out)"

# With it, the two-process path (--no-filter): deferred open holds under qemu-img info (no python
# process under the server yet) ...
"$B" serve plug/vm.vhdx --no-filter --socket "$W/s.sock" --allow-source-plugin python --source-timeout 30 > serve.log 2>&1 &
SERVE_PID=$!
for _ in $(seq 200); do [ -S "$W/s.sock" ] && break; sleep 0.05; done
URI="nbd+unix:///?socket=$W/s.sock"
qemu-img info -f vhdx "$URI" | grep -q "virtual size" || fail "qemu-img info over NBD: $(cat serve.log)"
pgrep -P "$SERVE_PID" -f vendor-nbdkit.py >/dev/null && fail "qemu-img info started the source (deferred open broken)"
# ... and the payload is the volume at LBA 2048, read through the vendor plugin.
qemu-img convert -f vhdx -O raw "$URI" disk.raw || fail "qemu-img convert: $(cat serve.log)"
pgrep -P "$SERVE_PID" -f vendor-nbdkit.py >/dev/null || fail "the source is not running after a payload read"
qemu-img compare -f raw -F raw vol.img "json:{\"driver\":\"raw\",\"offset\":1048576,\"size\":$((32 << 20)),\"file\":{\"driver\":\"file\",\"filename\":\"$W/disk.raw\"}}" \
  || fail "the exposed volume differs from the original"
kill "$SERVE_PID"; wait "$SERVE_PID" || true; SERVE_PID=
# Filter mode (the default for an nbdkit source): one nbdkit running the Python plugin with
# BootLab's filter on top, no child process; the same disk.
rm -f "$W/s.sock"
"$B" serve plug/vm.vhdx --socket "$W/s.sock" --allow-source-plugin python --source-timeout 30 > serve-filter.log 2>&1 &
SERVE_PID=$!
# (The socket is made before bootlab execs nbdkit: wait for nbdkit to answer.)
for _ in $(seq 200); do nbdinfo --size "$URI" >/dev/null 2>&1 && break; sleep 0.05; done
tr '\0' ' ' < "/proc/$SERVE_PID/cmdline" | grep -q -- "--filter=.*libbootlab-nbdkit.so python vendor-nbdkit.py file=vm.vbk bootlab-file=" \
  || fail "serve did not run the Python plugin under BootLab's filter: $(tr '\0' ' ' < "/proc/$SERVE_PID/cmdline")"
qemu-img compare -f vhdx -F raw "$URI" disk.raw || fail "filter mode serves another disk than the two-process path: $(cat serve-filter.log)"
[ -z "$(pgrep -P "$SERVE_PID" || true)" ] || fail "filter mode started a child process: $(pgrep -a -P "$SERVE_PID")"
kill "$SERVE_PID"; wait "$SERVE_PID" || true; SERVE_PID=

# A changed backup (another volume backed up to the same name) is refused with a clear error.
cp plug/vm.vbk vm.vbk.orig
truncate -s 40M vol2.img && mke2fs -q -t ext4 -b 4096 vol2.img
python3 "$REPO/examples/vendor-format/vendor-backup.py" backup vol2.img plug/vm.vbk
status=0; "$B" convert -O raw plug/vm.vhdx changed.raw --allow-source-plugin python > changed.out 2>&1 || status=$?
[ "$status" != 0 ] || fail "a changed source was served"
grep -q "changed since it was exposed" changed.out || fail "no clear error for a changed source: $(cat changed.out)"
cp vm.vbk.orig plug/vm.vbk
[ "$(sha256sum plug/vm.vbk | cut -d' ' -f1)" = "$sha_before" ] || fail "the backup was modified"
echo "75-user-sources: CLI: expose/serve/refusals/deferred open/compare/changed source ok"

# The pointer/source-spec decoder under libFuzzer, on the core the lab cell below leaves idle
# (one libFuzzer process, one cell booting under TCG): started here, waited for after the cell.
cd "$REPO"
swift build --product FuzzPluginPointer --sanitize fuzzer --scratch-path .build-fuzz 2>&1 | quiet
mkdir -p "$W/corpus" && cp Tests/FuzzCorpus/PluginPointer/* "$W/corpus/"
SWIFT_BACKTRACE=enable=no .build-fuzz/debug/FuzzPluginPointer -max_total_time="${FUZZ_SECONDS:-10}" -rss_limit_mb=2048 -timeout=10 \
  -artifact_prefix=Tests/FuzzCorpus/PluginPointer/ "$W/corpus" > "$W/fuzz.log" 2>&1 &
FUZZ_PID=$!

# The lab on the user's format: one cell (FULL: the qcow2 and VMDK scenarios too).
cells=(vendor-format)
[ "${BOOTLAB_USER_SOURCES_FULL:-0}" = 1 ] && cells+=(vmdk-volume qcow2-disk)
"$B" lab run --scenarios examples/vendor-format/scenarios "${cells[@]}" --jobs 2 --report "$W/report" > "$W/lab.out" 2>&1 \
  || fail "lab run on examples/vendor-format: $(grep -E 'FAIL|lab:' "$W/lab.out" | head -8)"
grep -E "^lab: " "$W/lab.out"

status=0; wait "$FUZZ_PID" || status=$?; FUZZ_PID=
tail -2 "$W/fuzz.log"
[ "$status" = 0 ] || fail "FuzzPluginPointer: exit $status, a finding (artifacts in Tests/FuzzCorpus/PluginPointer/)"
echo "75-user-sources: ok"
