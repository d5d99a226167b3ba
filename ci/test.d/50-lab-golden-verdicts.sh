#!/usr/bin/env bash
# Golden verdicts through `bootlab lab run`, keyed to inputs (docs/scenarios.md): one cell's
# goldens are recorded here, then edited the way a regression, a fresh machine, a generator bug
# and a new kernel would change them; each must give its own verdict and exit status.
set -euo pipefail
cd "$(dirname "$0")/../.."
B="$PWD/.build/debug/bootlab"
W=$(mktemp -d /tmp/bootlab-golden-cli.XXXXXX)
trap 'rm -rf "$W"' EXIT
fail() { echo "50-lab-golden-verdicts: FAIL: $*" >&2; exit 1; }
G="$W/Golden"
CELL="$G/mbrless-ext4/kvm-virtio"
lab() { "$B" lab run mbrless-ext4 --target kvm-virtio --golden "$G" "$@" >"$W/out" 2>&1; }

lab --update-golden || fail "recording goldens: $(tail -5 "$W/out")"
cp -a "$CELL" "$W/recorded"
verdicts=0
restore() { rm -rf "$CELL" && cp -a "$W/recorded" "$CELL"; }
# expect STATUS PATTERN WHAT: the run's exit status and a line of its output.
expect() {
  local want=$1 pattern=$2 what=$3 status=0
  lab "${@:4}" || status=$?
  [ "$status" = "$want" ] || fail "$what: exit $status, expected $want: $(grep -E 'golden|lab:' "$W/out" | head -5)"
  grep -qE "$pattern" "$W/out" || fail "$what: no line matching '$pattern' in: $(grep -E 'golden|lab:' "$W/out" | head -5)"
  verdicts=$((verdicts + 1))
  echo "ok: $what"
}
expect 0 'lab: 1 passed, 0 drifted, 0 failed, 0 skipped' "unchanged goldens pass"

# One character of a pipeline output's layout line, inputs unchanged: regression.
sed -i '0,/partition 1: status 0x80 type 0x83 start LBA 2048/s//partition 1: status 0x80 type 0x83 start LBA 2049/' "$CELL/layout.txt"
cmp -s "$CELL/layout.txt" "$W/recorded/layout.txt" && fail "layout edit did not apply"
expect 1 'golden +FAIL +[0-9.]+s +regression: layout differs with the same inputs' "one layout character → regression"
restore

# One character of the plugin file's digest: regression.
python3 - "$CELL/digests.txt" <<'PY'
import sys
path = sys.argv[1]
lines = open(path).read().split("\n")
for i, line in enumerate(lines):
    if " plugin main." in line and " sha256:" in line:
        at = line.index("sha256:") + 7
        lines[i] = line[:at] + ("0" if line[at] != "0" else "1") + line[at + 1:]
        break
open(path, "w").write("\n".join(lines))
PY
cmp -s "$CELL/digests.txt" "$W/recorded/digests.txt" && fail "digest edit did not apply"
expect 1 'regression: digests differ, layout unchanged with the same inputs' "one digest character → regression"

# The same, with every recorded package version from "another machine": still a regression.
python3 - "$CELL" <<'PY'
import json, sys
cell = sys.argv[1]
inputs = json.load(open(f"{cell}/inputs.json"))
for m in inputs["machines"].values():
    m["generator"]["external"]["packages"] = {k: v + "+b9" for k, v in m["generator"]["external"]["packages"].items()}
json.dump(inputs, open(f"{cell}/inputs.json", "w"), indent=2, sort_keys=True)
versions = json.load(open(f"{cell}/versions.json"))
versions["packages"] = {k: v + "+b9" for k, v in versions["packages"].items()}
json.dump(versions, open(f"{cell}/versions.json", "w"), indent=2, sort_keys=True)
PY
expect 1 'regression: digests differ' "other package versions do not excuse a regression"
restore

# The generated disk "changed" (its recorded digest and golden line differ) while every external
# input is the same: a regression of the generator.
python3 - "$CELL" <<'PY'
import json, sys
cell = sys.argv[1]
inputs = json.load(open(f"{cell}/inputs.json"))
inputs["machines"]["main"]["disk"] = "0" * 64
json.dump(inputs, open(f"{cell}/inputs.json", "w"), indent=2, sort_keys=True)
PY
sed -i -E '/ source-disk disk.raw sha256:/s/sha256:[0-9a-f]{64}/sha256:'"$(printf '0%.0s' {1..64})"'/' "$CELL/digests.txt"
expect 1 'regression of the generator: machine main: generated disk' "generator changed the disk with the same inputs → regression"

# The same disk change, but the recorded kernel image differs: drift naming the kernel. Not
# fatal by default; --fail-on-drift makes it exit 3.
python3 - "$CELL" <<'PY'
import json, sys
cell = sys.argv[1]
inputs = json.load(open(f"{cell}/inputs.json"))
files = inputs["machines"]["main"]["generator"]["external"]["files"]
files["kernel image (cloud)"] = "f" * 64
json.dump(inputs, open(f"{cell}/inputs.json", "w"), indent=2, sort_keys=True)
PY
expect 0 'DRIFT mbrless-ext4/kvm-virtio golden: input drift: machine main: generated disk sha256 000000000000 → [0-9a-f]{12} with kernel image \(cloud\) sha256 ffffffffffff → ' "new kernel image → drift naming it"
grep -q 'lab: 0 passed, 1 drifted, 0 failed, 0 skipped' "$W/out" || fail "drift not counted: $(tail -1 "$W/out")"
expect 3 'lab: 0 passed, 1 drifted' "--fail-on-drift exits 3" --fail-on-drift
restore

# The scenario's own definition differs from the recorded one: stale goldens, a failure.
python3 - "$CELL" <<'PY'
import json, sys
cell = sys.argv[1]
inputs = json.load(open(f"{cell}/inputs.json"))
inputs["pipeline"]["scenario"] = "0" * 64
json.dump(inputs, open(f"{cell}/inputs.json", "w"), indent=2, sort_keys=True)
PY
sed -i '0,/start LBA 2048/s//start LBA 2049/' "$CELL/layout.txt"
expect 1 'stale goldens: scenario definition changed' "changed scenario without re-recording → stale"
echo "50-lab-golden-verdicts: $verdicts verdicts as expected"
