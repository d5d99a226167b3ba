#!/usr/bin/env bash
# Short libFuzzer runs over the write overlay's map-journal parser and the replacement's
# progress-journal parser (FuzzFillJournal, FILL_FUZZ_SECONDS of one core, default 10).
# Tier: CI (FUZZ_SECONDS of one core, default 30, split over FUZZ_JOBS processes: ci/lib.sh fuzz_split). Long fuzzing: FUZZ_SECONDS=3600 bash ci/test.d/40-frontends.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
for p in FuzzOverlayJournal FuzzFillJournal; do
  swift build --product "$p" --sanitize fuzzer --scratch-path .build-fuzz 2>&1 | quiet
done
corpus=$(mktemp -d /tmp/bootlab-fuzz-overlay.XXXXXX)
fill=$(mktemp -d /tmp/bootlab-fuzz-fill.XXXXXX)
trap 'rm -rf "$corpus" "$corpus".log.* "$fill" "$fill".log.*' EXIT
cp Tests/FuzzCorpus/OverlayJournal/* "$corpus"/
fuzz_split "${FUZZ_SECONDS:-30}" "$corpus.log" .build-fuzz/debug/FuzzOverlayJournal "$corpus" \
  || { echo "40-frontends: FAIL: a finding in the overlay journal parser (see above)" >&2; exit 1; }
ls Tests/FuzzCorpus/FillJournal/* >/dev/null || { echo "40-frontends: FAIL: no seed corpus in Tests/FuzzCorpus/FillJournal" >&2; exit 1; }
cp Tests/FuzzCorpus/FillJournal/* "$fill"/
fuzz_split "${FILL_FUZZ_SECONDS:-10}" "$fill.log" .build-fuzz/debug/FuzzFillJournal "$fill" \
  || { echo "40-frontends: FAIL: a finding in the replacement progress-journal parser (see above)" >&2; exit 1; }
