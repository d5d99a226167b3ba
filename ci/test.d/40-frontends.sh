#!/usr/bin/env bash
# Short libFuzzer run over the write overlay's map-journal parser.
# Tier: CI (FUZZ_SECONDS of one core, default 30, split over FUZZ_JOBS processes: ci/lib.sh fuzz_split). Long fuzzing: FUZZ_SECONDS=3600 bash ci/test.d/40-frontends.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
swift build --product FuzzOverlayJournal --sanitize fuzzer --scratch-path .build-fuzz 2>&1 | quiet
corpus=$(mktemp -d /tmp/bootlab-fuzz-overlay.XXXXXX)
trap 'rm -rf "$corpus" "$corpus".log.*' EXIT
cp Tests/FuzzCorpus/OverlayJournal/* "$corpus"/
fuzz_split "${FUZZ_SECONDS:-30}" "$corpus.log" .build-fuzz/debug/FuzzOverlayJournal "$corpus" \
  || { echo "40-frontends: FAIL: a finding in the overlay journal parser (see above)" >&2; exit 1; }
