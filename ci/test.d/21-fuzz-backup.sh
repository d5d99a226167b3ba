#!/usr/bin/env bash
# Short libFuzzer run of the backup-image and partition-table parsers (FuzzBackupImage).
# Any crash, hang or leak fails CI; findings are left in .build-fuzz/fuzz-backup-artifacts/.
# Tier: CI (FUZZ_SECONDS of one core, default 30, split over FUZZ_JOBS processes: ci/lib.sh fuzz_split). Long fuzzing: FUZZ_SECONDS=3600 bash ci/test.d/21-fuzz-backup.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
swift build --product FuzzBackupImage --sanitize fuzzer --scratch-path .build-fuzz 2>&1 | quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus" && cp Tests/FuzzCorpus/BackupImage/* "$work/corpus/"
mkdir -p .build-fuzz/fuzz-backup-artifacts
fuzz_split "${FUZZ_SECONDS:-30}" "$work/fuzz.log" .build-fuzz/debug/FuzzBackupImage \
  -rss_limit_mb=2048 -timeout=10 -artifact_prefix=.build-fuzz/fuzz-backup-artifacts/ "$work/corpus/" \
  || { echo "21-fuzz-backup: FAIL: a finding (artifacts in .build-fuzz/fuzz-backup-artifacts/)" >&2; exit 1; }
