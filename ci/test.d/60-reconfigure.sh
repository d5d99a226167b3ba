#!/usr/bin/env bash
# Short libFuzzer run over the initramfs cpio reader, the modules.dep parser and the MBR/GRUB boot-sector checks.
# Tier: CI (FUZZ_SECONDS of one core, default 30, split over FUZZ_JOBS processes: ci/lib.sh fuzz_split). Long fuzzing: FUZZ_SECONDS=3600 bash ci/test.d/60-reconfigure.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
swift build --product FuzzCpio --sanitize fuzzer --scratch-path .build-fuzz 2>&1 | quiet
corpus=$(mktemp -d); trap 'rm -rf "$corpus" "$corpus".log.*' EXIT
cp Tests/FuzzCorpus/Cpio/* "$corpus/"
fuzz_split "${FUZZ_SECONDS:-30}" "$corpus.log" .build-fuzz/debug/FuzzCpio "$corpus" \
  || { echo "60-reconfigure: FAIL: a finding in the cpio/modules.dep/boot-sector parsers (see above)" >&2; exit 1; }
