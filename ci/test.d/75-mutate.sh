#!/usr/bin/env bash
# Mutation score, CI sample (docs/mutation-testing.md): `bootlab lab mutate --sample 6 --no-boot`
# runs six mutants of the fault catalog (chosen by a fixed seed; mutants only a boot can catch
# are left out, the others must be caught without booting). Every mutant must be caught; the
# score is printed. Source mutants (Tests/Mutants, through ci/mutants: a scratch copy of the tree,
# built, its cells run with `lab run --independent-only`) need a cold build of that copy (minutes
# on 2 cores in a fresh clone), so they are flag tiers:
#   BOOTLAB_MUTATE_SOURCE=1 bash ci/test.d/75-mutate.sh   the sample plus one source mutant
#   BOOTLAB_MUTATE_FULL=1 bash ci/test.d/75-mutate.sh     whole catalog with boots + every source
#                                                         mutant with controls (time: docs/mutation-testing.md)
# Tier: CI (catalog sample); flags BOOTLAB_MUTATE_SOURCE=1, BOOTLAB_MUTATE_FULL=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
swift build --product bootlab 2>&1 | quiet
swift build --product bootlab-nbdkit 2>&1 | quiet
B="$PWD/.build/debug/bootlab"
W=$(mktemp -d /tmp/bootlab-mutate.XXXXXX)
trap 'rm -rf "$W"' EXIT
start=$(date +%s)
if [ "${BOOTLAB_MUTATE_FULL:-0}" = 1 ]; then
  "$B" lab mutate --jobs "${BOOTLAB_LAB_JOBS:-2}" --report "$W/catalog" || { echo "75-mutate: FAIL: the catalog has survivors (see above)" >&2; exit 1; }
  ci/mutants --control --report "$W/source" || { echo "75-mutate: FAIL: source mutants not caught (see above)" >&2; exit 1; }
  cat "$W/catalog/mutation.md" "$W/source/mutants.md"
else
  "$B" lab mutate --sample 6 --seed 15 --no-boot --jobs "${BOOTLAB_LAB_JOBS:-2}" --report "$W/catalog" \
    || { echo "75-mutate: FAIL: a sampled catalog mutant was not caught (see above)" >&2; exit 1; }
  grep -q '^mutation score: 6/6 caught (100.0%)' "$W/catalog/mutation.md" || { echo "75-mutate: FAIL: expected 6/6: $(head -1 "$W/catalog/mutation.md")" >&2; exit 1; }
  if [ "${BOOTLAB_MUTATE_SOURCE:-0}" = 1 ]; then
    ci/mutants vhdx-header-crc-range || { echo "75-mutate: FAIL: the source mutant was not caught (see above)" >&2; exit 1; }
  else
    echo "75-mutate: source mutants not run (flag tier: BOOTLAB_MUTATE_SOURCE=1 or BOOTLAB_MUTATE_FULL=1)"
  fi
fi
echo "75-mutate: ok ($(( $(date +%s) - start )) s)"
