#!/usr/bin/env bash
# Short libFuzzer run of the backup-image and partition-table parsers (FuzzBackupImage).
# Any crash, hang or leak fails CI; findings are left in .build-fuzz/fuzz-backup-artifacts/.
# Tier: CI (FUZZ_SECONDS, default 30). Long fuzzing: FUZZ_SECONDS=3600 bash ci/test.d/21-fuzz-backup.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
swift build --product FuzzBackupImage --sanitize fuzzer --scratch-path .build-fuzz 2>&1 | quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp Tests/FuzzCorpus/BackupImage/* "$work/"
mkdir -p .build-fuzz/fuzz-backup-artifacts
SWIFT_BACKTRACE=enable=no .build-fuzz/debug/FuzzBackupImage -max_total_time="${FUZZ_SECONDS:-30}" \
  -rss_limit_mb=2048 -timeout=10 -artifact_prefix=.build-fuzz/fuzz-backup-artifacts/ "$work/" 2>&1 | tail -5
