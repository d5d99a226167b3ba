#!/usr/bin/env bash
# Short libFuzzer runs of every native format's parser (reader + check: VHDX, VMDK, VHD, VDI,
# qcow2) and of the GPT reader/writer (FuzzGPT) over its committed seed corpus. New crashes are written to Tests/FuzzCorpus/<FORMAT>/
# crash-*; commit them: each format's corpus test replays every file there as a regression test.
# Tier: CI (FUZZ_SECONDS per format, default 10). Long fuzzing: FUZZ_SECONDS=3600 bash ci/test.d/20-fuzz-formats.sh
# (or FUZZ_FORMATS="VMDK" to pick formats).
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
formats=${FUZZ_FORMATS:-"VHDX VMDK VHD VDI QCOW2 GPT"}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for f in $formats; do
  swift build --product "Fuzz$f" --sanitize fuzzer --scratch-path .build-fuzz 2>&1 | quiet
  ls Tests/FuzzCorpus/"$f"/* >/dev/null || { echo "20-fuzz-formats: FAIL: no seed corpus in Tests/FuzzCorpus/$f" >&2; exit 1; }
  mkdir -p "$work/$f"
  cp Tests/FuzzCorpus/"$f"/* "$work/$f/"
  echo "== $f: $(ls "$work/$f" | wc -l) seeds, ${FUZZ_SECONDS:-10} s"
  SWIFT_BACKTRACE=enable=no .build-fuzz/debug/"Fuzz$f" -max_total_time="${FUZZ_SECONDS:-10}" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix=Tests/FuzzCorpus/"$f"/ "$work/$f/" 2>&1 | tail -3
done
echo "20-fuzz-formats: every format fuzzed without a finding"
