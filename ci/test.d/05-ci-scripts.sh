#!/usr/bin/env bash
# Tier: CI. The CI scripts' own test: CI must not be green on a broken tree. In a scratch tree, runs
# the real entry point `bash .ci/run` as CI does (CI=true, no stdin) and checks its exit status and
# its computed last line:
#   1. a syntax error in a Sources file  → non-zero, "0 passed, 1 failed" (ci/setup's build)
#   2. the unchanged tree (control)       → exit 0, "1 passed, 0 failed, 0 skipped"
#   3. a failing unit test                → non-zero, "0 passed, 1 failed, 0 skipped"
#   4. a skipped unit test                → non-zero on CI, "0 passed, 0 failed, 1 skipped"
# plus ci/count-lab on synthetic report.json files (failed, skipped and drifted cells).
# The control run proves the restrictions below are not what makes 1, 3 and 4 fail.
# The subject is the CI scripts (.ci/run, ci/test, ci/setup, ci/gate, ci/count-*), copied unchanged.
# The package they build is a stub, so that the four runs cost seconds, not a cold build of the
# whole project (which this CI run's own ci/setup and ci/gate build and test anyway): the real
# Sources/BlockCore and Sources/CCryptoShim, and a BlockCoreTests target holding only the probe.
# The copy has no ci/setup.d: its warm-ups (kernel cache, GRUB volume, libguestfs appliance, the
# fuzz build of libvhdi) concern the project, not the scripts, and ran in this CI run's ci/setup.
# To stay fast, the scratch runs are also restricted (same scripts, documented knobs, announced
# loudly): one probe test (BOOTLAB_TEST_FILTER), no scenario suite (BOOTLAB_CI_SKIP_LAB=1), no
# ci/test.d checks (BOOTLAB_CI_CHECKS=, which also keeps this script from recursing). ci/setup
# runs for real in the copy; it installs nothing there (every package is already present).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
fail() { echo "05-ci-scripts: FAIL: $*" >&2; exit 1; }

scratch=$(mktemp -d /tmp/bootlab-ci-selftest.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
# The tracked and untracked CI scripts (not ci/setup.d) and the stub package's real sources.
git ls-files -z --cached --others --exclude-standard -- .ci ci Sources/BlockCore Sources/CCryptoShim \
  | { grep -zv '^ci/setup\.d/' || true; } \
  | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$scratch"
cat > "$scratch/Package.swift" <<'EOF'
// swift-tools-version:6.0
// 05-ci-scripts' stub package: two of the project's real modules and the self-test's probe.
import PackageDescription
let package = Package(
    name: "BootLabCISelfTest",
    targets: [
        .target(name: "CCryptoShim", linkerSettings: [.linkedLibrary("cryptopp")]),
        .target(name: "BlockCore", dependencies: ["CCryptoShim"]),
        .testTarget(name: "BlockCoreTests", dependencies: ["BlockCore"]),
    ]
)
EOF
mkdir -p "$scratch/Tests/BlockCoreTests"
[ -x "$scratch/ci/test" ] && [ -x "$scratch/ci/setup" ] && [ -f "$scratch/.ci/run" ] \
  && [ -f "$scratch/Sources/BlockCore/BlockSource.swift" ] && [ ! -e "$scratch/ci/setup.d" ] \
  || fail "the scratch copy is incomplete"
probe="$scratch/Tests/BlockCoreTests/CISelfTestProbe.swift"
victim="$scratch/Sources/BlockCore/BlockSource.swift"
cp "$victim" "$scratch/victim.orig"

# The caller's BOOTLAB_* knobs must not leak into the copy (e.g. BOOTLAB_GATE_SKIP_UNIT=1 would
# make every case vacuous; the control case caught exactly that). Caches and mirrors stay.
unset_knobs=()
for v in $(compgen -e | grep '^BOOTLAB_' || true); do
  case $v in BOOTLAB_CACHE|BOOTLAB_DEBIAN_MIRROR) ;; *) unset_knobs+=(-u "$v") ;; esac
done

# run NAME EXPECTED_STATUS(0|nonzero) EXPECTED_LAST_LINE: one `.ci/run` in the copy.
run() {
  local name=$1 want=$2 want_line=$3 log="$scratch/run-$1.log" t0 status=0 last
  t0=$(date +%s)
  (cd "$scratch" && env ${unset_knobs[@]+"${unset_knobs[@]}"} CI=true \
     BOOTLAB_TEST_FILTER=CISelfTestProbe BOOTLAB_CI_SKIP_LAB=1 BOOTLAB_CI_CHECKS= \
     timeout 1200 bash .ci/run < /dev/null > "$log" 2>&1) || status=$?
  last=$(tail -1 "$log")
  echo "05-ci-scripts: $name: exit $status in $(( $(date +%s) - t0 )) s; last line: $last"
  if { [ "$want" = 0 ] && [ "$status" != 0 ]; } || { [ "$want" != 0 ] && [ "$status" = 0 ]; }; then
    tail -30 "$log" >&2; fail "$name: .ci/run exited $status, expected $want"
  fi
  [[ "$last" =~ ^ci/test:\ [0-9]+\ passed,\ [0-9]+\ failed(,\ [0-9]+\ skipped)?$ ]] \
    || { tail -30 "$log" >&2; fail "$name: the last line is not the plain count line"; }
  [ "$last" = "ci/test: $want_line" ] || { tail -30 "$log" >&2; fail "$name: expected 'ci/test: $want_line'"; }
}

# The passing probe: with it the tree is the control's, so case 1 differs from 2 by its syntax error.
cat > "$probe" <<'EOF'
import Testing
@Suite struct CISelfTestProbe { @Test func probe() { #expect(1 + 1 == 2) } }
EOF

# 1. A syntax error in one Swift file of a fresh copy (cold build).
printf '\nfunc ciSelfTestSyntaxError( {\n' >> "$victim"
run syntax-error nonzero "0 passed, 1 failed, 0 skipped"
grep -q "BlockSource.swift:[0-9]*:[0-9]*: error:" "$scratch/run-syntax-error.log" \
  || fail "syntax-error: the log does not show the compiler error in BlockSource.swift"
cp "$scratch/victim.orig" "$victim"

# 2. Control: the same restricted run on a clean tree passes.
run control 0 "1 passed, 0 failed, 0 skipped"

# 3. A failing unit test.
cat > "$probe" <<'EOF'
import Testing
@Suite struct CISelfTestProbe { @Test func probe() { #expect(1 + 1 == 3, "ci self-test: a failing test") } }
EOF
run failing-test nonzero "0 passed, 1 failed, 0 skipped"
grep -q "FAILED: probe()" "$scratch/run-failing-test.log" || fail "failing-test: the failing test is not named"

# 4. A skipped unit test (fatal on CI).
cat > "$probe" <<'EOF'
import Testing
@Suite struct CISelfTestProbe {
    @Test(.enabled(if: false, "ci self-test: a skipped test")) func probe() {}
}
EOF
run skipped-test nonzero "0 passed, 0 failed, 1 skipped"
grep -q "SKIPPED: probe()" "$scratch/run-skipped-test.log" || fail "skipped-test: the skipped test is not named"

# ci/count-lab: computed from report.json's summary; fail is fatal, drift and skip are counted
# (ci/test makes skips fatal on CI with the same code as for unit tests, checked in 4).
lab() { # SUMMARY_JSON EXPECTED_STATUS EXPECTED_LINE
  local f="$scratch/report.json" status=0 line
  printf '{"tool":"t","cells":[],"summary":%s}\n' "$1" > "$f"
  line=$(ci/count-lab "$f" | head -1) || status=$?
  [ "$status" = "$2" ] && [ "$line" = "$3" ] || fail "count-lab $1: exit $status, '$line'; expected $2, '$3'"
}
lab '{"pass":3,"fail":0,"drift":0,"skip":0}' 0 "lab: 3 passed, 0 drifted, 0 failed, 0 skipped"
lab '{"pass":2,"fail":1,"drift":0,"skip":0}' 1 "lab: 2 passed, 0 drifted, 1 failed, 0 skipped"
lab '{"pass":2,"fail":0,"drift":1,"skip":1}' 0 "lab: 2 passed, 1 drifted, 0 failed, 1 skipped"
status=0; ci/count-lab "$scratch/missing.json" > /dev/null || status=$?
[ "$status" = 1 ] || fail "count-lab: a missing report.json did not fail"

echo "05-ci-scripts: every case passed in $(( $(date +%s) - start )) s"
