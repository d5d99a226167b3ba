#!/usr/bin/env bash
# Short libFuzzer runs of every native format's parser (reader + check: VHDX, VMDK, VHD, VDI,
# qcow2) and of the GPT reader/writer (FuzzGPT) over its committed seed corpus. New crashes are written to Tests/FuzzCorpus/<FORMAT>/
# crash-*; commit them: each format's corpus test replays every file there as a regression test.
# Every harness is built first, then FUZZ_JOBS formats (default: the CPU count) fuzz at once, each
# for its own FUZZ_SECONDS on one core (a libFuzzer process uses one core: run one at a time, the
# other core idled). Any finding fails the check, naming the format, after every run has ended.
# Tier: CI (FUZZ_SECONDS per format, default 10). Long fuzzing: FUZZ_SECONDS=3600 bash ci/test.d/20-fuzz-formats.sh
# (or FUZZ_FORMATS="VMDK" to pick formats).
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
formats=${FUZZ_FORMATS:-"VHDX VMDK VHD VDI QCOW2 GPT"}
jobs=${FUZZ_JOBS:-$(nproc)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for f in $formats; do
  swift build --product "Fuzz$f" --sanitize fuzzer --scratch-path .build-fuzz 2>&1 | quiet
  ls Tests/FuzzCorpus/"$f"/* >/dev/null || { echo "20-fuzz-formats: FAIL: no seed corpus in Tests/FuzzCorpus/$f" >&2; exit 1; }
  mkdir -p "$work/$f"
  cp Tests/FuzzCorpus/"$f"/* "$work/$f/"
done

fuzz() { # FORMAT: one format's run, its output in $work/FORMAT.log
  SWIFT_BACKTRACE=enable=no .build-fuzz/debug/"Fuzz$1" -max_total_time="${FUZZ_SECONDS:-10}" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix=Tests/FuzzCorpus/"$1"/ "$work/$1/" > "$work/$1.log" 2>&1
}
pids=(); names=(); failed=()
finish_oldest() { # waits for the oldest run still going and reports it
  local pid=${pids[0]} f=${names[0]} status=0
  wait "$pid" || status=$?
  echo "== $f: exit $status"; tail -3 "$work/$f.log"
  [ "$status" = 0 ] || failed+=("$f (exit $status; artifacts in Tests/FuzzCorpus/$f/)")
  pids=("${pids[@]:1}"); names=("${names[@]:1}")
}
for f in $formats; do
  [ "${#pids[@]}" -lt "$jobs" ] || finish_oldest
  echo "== $f: $(ls "$work/$f" | wc -l) seeds, ${FUZZ_SECONDS:-10} s"
  fuzz "$f" & pids+=("$!"); names+=("$f")
done
while [ "${#pids[@]}" -gt 0 ]; do finish_oldest; done
if [ "${#failed[@]}" != 0 ]; then
  for n in "${failed[@]}"; do echo "20-fuzz-formats: FAIL: a finding in $n" >&2; done
  exit 1
fi
echo "20-fuzz-formats: every format fuzzed without a finding"
