#!/usr/bin/env bash
# A short libFuzzer run of the VHDX parser (reader + check) over the committed seed corpus.
# New crashes are written to Tests/FuzzCorpus/VHDX/crash-*; commit them: the corpus test replays
# every file there as a regression test.
# Tier: CI (FUZZ_SECONDS, default 30). Long fuzzing: FUZZ_SECONDS=3600 bash ci/test.d/20-fuzz-vhdx.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
swift build --product FuzzVHDX --sanitize fuzzer --scratch-path .build-fuzz 2>&1 | quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp Tests/FuzzCorpus/VHDX/* "$work/"
SWIFT_BACKTRACE=enable=no .build-fuzz/debug/FuzzVHDX -max_total_time="${FUZZ_SECONDS:-30}" -rss_limit_mb=2048 \
  -artifact_prefix=Tests/FuzzCorpus/VHDX/ "$work/" 2>&1 | tail -5
