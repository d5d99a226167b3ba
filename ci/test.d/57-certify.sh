#!/usr/bin/env bash
# `bootlab certify` and `lab run --cell-timeout` (issue 15 part B), through the real CLI, real
# boots under QEMU TCG:
#  - Scenarios/targets/hyperv-gen1.yaml certifies (one scenario, one boot, a one-mutant sample);
#  - the same profile with a boot runner of its own (a script that runs qemu-system-x86_64) certifies;
#  - a deliberately broken profile (an IDE machine with an AHCI driver list) does not, and the
#    certificate says why: the cell, the validator, the console's "root device not found";
#  - the docs' example target (examples/targets/qemu-pc-megasas.yaml, not one of the suite's)
#    certifies on a reconfigured scenario, so docs/certifying-a-target.md stays true;
#  - a cell past --cell-timeout is killed and reported "timeout after N s", leaving no process
#    and no mount behind.
# Two lanes run side by side. The full certify of a target (every scenario, 3 boots, 4 mutants)
# is documented with its time in docs/certifying-a-target.md, not run here.
# Tier: CI (about 3 minutes on a 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
swift build --product bootlab 2>&1 | quiet
B="$PWD/.build/debug/bootlab"
W=$(mktemp -d /tmp/bootlab-certify.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  grep -o " $W[^ ]*" /proc/mounts | xargs -r -n1 fusermount3 -u 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "57-certify: FAIL: $*" >&2; exit 1; }

# has TEXT NEEDLE: TEXT contains NEEDLE (no pipe into grep -q: under pipefail its early exit
# fails the writer).
has() { [[ "$1" == *"$2"* ]]; }
# json FILE EXPR: a Python expression over the parsed JSON `d`, printed.
json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

certify() { # NAME EXPECTED_STATUS TARGET ARGS…
  local name=$1 want=$2 target=$3; shift 3
  local status=0 start=$SECONDS
  "$B" certify "$target" --boots 1 --report "$W/$name" "$@" >"$W/$name.out" 2>&1 || status=$?
  echo "$name: exit $status after $((SECONDS - start)) s: $(tail -1 "$W/$name.out")"
  [ "$status" = "$want" ] || fail "$name: exit $status, expected $want: $(tail -20 "$W/$name.out")"
  for f in certificate.html certificate.json junit.xml; do [ -s "$W/$name/$f" ] || fail "$name: no $f"; done
  if grep -qE '(src|href)="https?:|<link |@import' "$W/$name/certificate.html"; then fail "$name: the HTML certificate loads external assets"; fi
}

lane_a() {
  certify hyperv-gen1 0 Scenarios/targets/hyperv-gen1.yaml --scenario mbrless-ext4 --mutants 1 --no-mutant-boots
  local c="$W/hyperv-gen1/certificate.json"
  [ "$(json "$c" 'd["certified"]')" = True ] || fail "hyperv-gen1: not certified"
  [ "$(json "$c" '[x["cell"]["id"] if "id" in x["cell"] else x["cell"]["scenario"]+"/"+x["cell"]["target"] for x in d["cells"]]')" = "['mbrless-ext4/hyperv-gen1']" ] || fail "hyperv-gen1: wrong cells"
  [ "$(json "$c" 'd["cells"][0]["kind"]')" = recorded ] || fail "hyperv-gen1: the suite's own profile must run its recorded cells (goldens)"
  [ "$(json "$c" '[r["outcome"]["verdict"] for r in d["cells"][0]["records"] if r["name"]=="golden"]')" = "['pass']" ] || fail "hyperv-gen1: golden did not pass"
  [ "$(json "$c" 'd["target"]["digest"]')" = "$(sha256sum Scenarios/targets/hyperv-gen1.yaml | cut -d' ' -f1)" ] || fail "hyperv-gen1: wrong profile digest"
  [ "$(json "$c" '(d["mutation"]["ran"], d["mutation"]["total"], d["mutation"]["caught"])')" = "(True, 1, 1)" ] || fail "hyperv-gen1: mutation sample: $(json "$c" 'd["mutation"]')"
  has "$(json "$c" 'd["versions"]["qemu-system-x86_64 --version"]')" "QEMU emulator version" || fail "hyperv-gen1: no QEMU version"
  grep -q "What was not covered" "$W/hyperv-gen1/certificate.html" || fail "hyperv-gen1: no not-covered section"

  certify runner 0 examples/targets/script-runner/hyperv-gen1.yaml --scenario mbrless-ext4 --mutants 0
  c="$W/runner/certificate.json"
  [ "$(json "$c" 'd["certified"]')" = True ] || fail "runner: not certified"
  has "$(json "$c" '[r["outcome"]["details"] for r in d["cells"][0]["records"] if r["name"]=="boot"][0]')" "examples/runners/qemu-ide-runner.sh" \
    || fail "runner: the boot did not go through the target's runner"
  has "$(json "$c" 'd["target"]["bootRunner"]')" "qemu-ide-runner.sh" || fail "runner: the certificate does not name the runner"

  # lab merge on real shard reports (cells cut short by a 1 s cell timeout: only the reports matter).
  local k st
  for k in 1 2; do
    "$B" lab run mbrless-ext4 --shard "$k/2" --cell-timeout 1 --report "$W/shard$k" >"$W/shard$k.out" 2>&1 || true
    [ -s "$W/shard$k/report.json" ] || fail "merge: shard $k wrote no report: $(tail -3 "$W/shard$k.out")"
  done
  st=0; "$B" lab merge "$W/shard2" "$W/shard1" --report "$W/merged" >"$W/merge.out" 2>&1 || st=$?
  [ "$st" = 1 ] || fail "merge: exit $st, expected 1 (the cells failed): $(tail -3 "$W/merge.out")"
  [ "$(json "$W/merged/report.json" 'len(d["cells"])')" = "$(json "$W/shard1/report.json" 'len(d["suite"]["cells"])')" ] || fail "merge: not every cell in the merged report"
  [ -s "$W/merged/report.html" ] && [ -s "$W/merged/junit.xml" ] || fail "merge: no HTML or JUnit report"
  st=0; "$B" lab merge "$W/shard1" --report "$W/m2" >"$W/merge2.out" 2>&1 || st=$?
  [ "$st" = 2 ] && grep -q "missing shard 2/2" "$W/merge2.out" || fail "merge: a missing shard gave exit $st: $(cat "$W/merge2.out")"
  st=0; "$B" lab merge "$W/shard1" "$W/shard1" "$W/shard2" --report "$W/m3" >"$W/merge3.out" 2>&1 || st=$?
  [ "$st" = 2 ] && grep -q "shard 1/2 appears 2 times" "$W/merge3.out" || fail "merge: a duplicated shard gave exit $st: $(cat "$W/merge3.out")"
  echo "merge: 2 real shards merged; a missing and a duplicated shard refused (exit 2)"
}

lane_b() {
  certify broken 1 examples/targets/hyperv-gen1-wrong-driver.yaml --scenario mbrless-ext4 --mutants 0
  local c="$W/broken/certificate.json"
  [ "$(json "$c" 'd["certified"]')" = False ] || fail "broken: certified"
  [ "$(json "$c" '(d["failures"][0]["cell"], d["failures"][0]["check"])')" = "('mbrless-ext4/hyperv-gen1-wrong-driver', 'boot')" ] \
    || fail "broken: the failure does not name the cell and the validator: $(json "$c" 'd["failures"]')"
  has "$(json "$c" 'd["failures"][0]["consoleExcerpt"]')" "BOOTLAB: root device not found" || fail "broken: no console excerpt saying why"
  grep -q "Why it is not certified" "$W/broken/certificate.html" || fail "broken: the HTML does not say why"
  grep -q "<failure message=\"NOT CERTIFIED" "$W/broken/junit.xml" || fail "broken: JUnit has no failing certificate case"

  certify megasas 0 examples/targets/qemu-pc-megasas.yaml --scenario foreign-drivers --mutants 0
  c="$W/megasas/certificate.json"
  [ "$(json "$c" '(d["certified"], d["cells"][0]["kind"])')" = "(True, 'derived')" ] || fail "megasas: $(json "$c" 'd["verdict"]')"
  has "$(json "$c" 'd["adaptations"]')" "lsi-sas" || fail "megasas: no drivers.json adaptation named"

  # The hard timeout: the cell is killed wherever it is (FUSE mounted, QEMU or a tool running).
  local status=0 start=$SECONDS seen="" lab i
  "$B" lab run mbrless-ext4 --target kvm-virtio --cell-timeout 6 --report "$W/timeout" >"$W/timeout.out" 2>&1 &
  lab=$!
  PIDS+=("$lab")
  while kill -0 "$lab" 2>/dev/null; do
    for i in $(ps -o pid= --ppid "$lab" 2>/dev/null || true); do seen="$seen $i $(ps -o pid= --ppid "$i" 2>/dev/null || true)"; done
    sleep 0.2
  done
  wait "$lab" || status=$?
  [ "$status" = 1 ] || fail "timeout: exit $status, expected 1: $(tail -5 "$W/timeout.out")"
  local last
  last=$(json "$W/timeout/report.json" 'd["cells"][0]["records"][-1]["name"] + ": " + d["cells"][0]["records"][-1]["outcome"]["message"]')
  case "$last" in "cell-timeout: timeout after 6 s: stopped during "*) ;; *) fail "timeout: last record is '$last'";; esac
  [ $((SECONDS - start)) -lt 60 ] || fail "timeout: the run took $((SECONDS - start)) s"
  local left=""
  for p in $seen; do
    if kill -0 "$p" 2>/dev/null && [ "$(ps -o stat= -p "$p" | cut -c1)" != "Z" ]; then left="$left $p($(ps -o comm= -p "$p"))"; fi
  done
  [ -z "$left" ] || fail "timeout: processes left behind:$left"
  if grep -q " $W/timeout" /proc/mounts; then fail "timeout: mounts left behind"; fi
  echo "timeout: $last; $(echo $seen | wc -w) processes seen, none left, no mount"
}

lane_a > "$W/lane-a.log" 2>&1 & PIDS+=($!); A=$!
lane_b > "$W/lane-b.log" 2>&1 & PIDS+=($!); Bl=$!
sa=0; wait "$A" || sa=$?
sb=0; wait "$Bl" || sb=$?
cat "$W/lane-a.log" "$W/lane-b.log"
[ "$sa" = 0 ] && [ "$sb" = 0 ] || { echo "57-certify: FAIL" >&2; exit 1; }
echo "57-certify: every step passed"
