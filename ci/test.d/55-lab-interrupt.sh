#!/usr/bin/env bash
# Ctrl-C and SIGTERM during `bootlab lab run` (issue 15, "Operations"): the lab stops QEMU,
# unmounts FUSE, stops its servers and tools, and exits 128+signal, leaving no process it started
# and no mount behind. The signal arrives mid-cell, while QEMU boots (or, with NBD, while the
# server runs): every descendant seen just before the signal must be gone after.
# Tier: CI (about a minute per signal).
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
swift build --product bootlab 2>&1 | quiet
B="$PWD/.build/debug/bootlab"
W=$(mktemp -d /tmp/bootlab-interrupt.XXXXXX)
LAB=""
cleanup() { [ -n "$LAB" ] && kill -KILL "$LAB" 2>/dev/null || true; grep -o " $W[^ ]*" /proc/mounts | xargs -r -n1 fusermount3 -u 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
fail() { echo "55-lab-interrupt: FAIL: $*" >&2; exit 1; }

# Every descendant of $1 (children, grandchildren, …).
descendants() {
  local kids
  kids=$(ps -o pid= --ppid "$1" 2>/dev/null || true)
  for k in $kids; do echo "$k"; descendants "$k"; done
}

interrupt() {
  local sig=$1 scenario=$2 target=$3 want_name=$4 num=$5
  "$B" lab run "$scenario" --target "$target" --report "$W/r-$sig" --keep >"$W/out-$sig" 2>&1 &
  LAB=$!
  local seen="" i
  for i in $(seq 1 600); do
    seen=$(descendants "$LAB" | tr '\n' ' ')
    if ps -o comm= -p $seen 2>/dev/null | grep -q "$want_name"; then break; fi
    kill -0 "$LAB" 2>/dev/null || fail "$sig: lab run ended before $want_name started: $(tail -5 "$W/out-$sig")"
    sleep 0.2
  done
  ps -o comm= -p $seen 2>/dev/null | grep -q "$want_name" || fail "$sig: $want_name never started under the lab"
  local mounted
  mounted=$(grep -c " $W/r-$sig" /proc/mounts || true)
  kill -"$sig" "$LAB"
  local status=0
  wait "$LAB" || status=$?
  LAB=""
  [ "$status" = $((128 + num)) ] || fail "$sig: exit status $status, expected $((128 + num)): $(tail -5 "$W/out-$sig")"
  grep -q "interrupted by signal $num" "$W/out-$sig" || fail "$sig: no interruption line: $(tail -3 "$W/out-$sig")"
  local left=""
  for p in $seen; do
    if kill -0 "$p" 2>/dev/null && [ "$(ps -o stat= -p "$p" | cut -c1)" != "Z" ]; then left="$left $p($(ps -o comm= -p "$p"))"; fi
  done
  [ -z "$left" ] || fail "$sig: processes left behind:$left"
  if grep -q " $W/r-$sig" /proc/mounts; then fail "$sig: mounts left behind: $(grep " $W/r-$sig" /proc/mounts)"; fi
  echo "ok: $sig during $want_name of $scenario/$target: exit $status, $(echo $seen | wc -w) descendants stopped, $mounted mount(s) before, none after"
}

interrupt INT mbrless-ext4 hyperv-gen1 qemu-system 2
interrupt TERM encrypted-volume-nbd kvm-virtio qemu-system 15
echo "55-lab-interrupt: every step passed"
