#!/usr/bin/env bash
# The scenario suite as a regression gate: every scenario × target, golden digests compared,
# real boots under QEMU TCG. Fails on any regression; input drift is reported, not fatal.
set -euo pipefail
cd "$(dirname "$0")/../.."
report="${BOOTLAB_LAB_REPORT:-.build/lab-report}"
rm -rf "$report"
start=$(date +%s)
status=0
.build/debug/bootlab lab run --jobs "${BOOTLAB_LAB_JOBS:-2}" --report "$report" || status=$?
echo "ci/test.d/50-lab.sh: suite took $(( $(date +%s) - start )) s; HTML report: $report/report.html"
exit $status
