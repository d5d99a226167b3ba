#!/usr/bin/env bash
# Short libFuzzer run over the initramfs cpio reader, the modules.dep parser and the MBR/GRUB boot-sector checks.
# Tier: CI (FUZZ_SECONDS, default 30). Long fuzzing: FUZZ_SECONDS=3600 bash ci/test.d/60-reconfigure.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
swift build --product FuzzCpio --sanitize fuzzer --scratch-path .build-fuzz 2>&1 | quiet
corpus=$(mktemp -d); trap 'rm -rf "$corpus"' EXIT
cp Tests/FuzzCorpus/Cpio/* "$corpus/"
SWIFT_BACKTRACE=enable=no .build-fuzz/debug/FuzzCpio -max_total_time="${FUZZ_SECONDS:-30}" "$corpus"
