#!/bin/bash
# Short libFuzzer run over the initramfs cpio reader and the modules.dep parser.
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build --product FuzzCpio --sanitize fuzzer --scratch-path .build-fuzz 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
corpus=$(mktemp -d); trap 'rm -rf "$corpus"' EXIT
cp Tests/FuzzCorpus/Cpio/* "$corpus/"
SWIFT_BACKTRACE=enable=no .build-fuzz/debug/FuzzCpio -max_total_time=30 "$corpus"
