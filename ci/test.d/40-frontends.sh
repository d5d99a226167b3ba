#!/usr/bin/env bash
# Short libFuzzer run over the write overlay's map-journal parser.
# Tier: CI (FUZZ_SECONDS, default 30). Long fuzzing: FUZZ_SECONDS=3600 bash ci/test.d/40-frontends.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
swift build --product FuzzOverlayJournal --sanitize fuzzer --scratch-path .build-fuzz 2>&1 | quiet
corpus=$(mktemp -d /tmp/bootlab-fuzz-overlay.XXXXXX)
trap 'rm -rf "$corpus"' EXIT
cp Tests/FuzzCorpus/OverlayJournal/* "$corpus"/
SWIFT_BACKTRACE=enable=no .build-fuzz/debug/FuzzOverlayJournal -max_total_time="${FUZZ_SECONDS:-30}" "$corpus"
