# Sourced by the ci/ scripts (which all run with set -euo pipefail).

# Drops SwiftPM's "[12/345] Compiling …" progress lines. It never fails itself (grep exits 1 when
# it prints nothing), so under pipefail `swift build … 2>&1 | quiet` has swift build's status.
quiet() { grep -vE '^\[[0-9]+/[0-9]+\] ' || true; }

# fuzz_split SECONDS LOG BINARY ARG…: SECONDS of libFuzzer time on one harness, spread over
# FUZZ_JOBS processes (default: the CPU count) running at once, SECONDS/FUZZ_JOBS each, on the same
# corpus directory (libFuzzer's parallel mode: each process reloads the corpus, -reload=1, and picks
# up the others' new inputs). The same one-core fuzzing time as one process for SECONDS, in
# 1/FUZZ_JOBS of the wall time: a libFuzzer process uses one core, so one alone left the other idle.
# Prints each process's last lines (its log: LOG.N); returns non-zero if any process did (a finding).
fuzz_split() {
  local seconds=$1 log=$2; shift 2
  local n=${FUZZ_JOBS:-$(nproc)} i s status=0 pids=()
  local per=$(( (seconds + n - 1) / n ))
  for ((i = 1; i <= n; i++)); do
    SWIFT_BACKTRACE=enable=no "$@" -max_total_time="$per" > "$log.$i" 2>&1 &
    pids+=("$!")
  done
  for ((i = 1; i <= n; i++)); do
    s=0; wait "${pids[$((i - 1))]}" || s=$?
    echo "fuzz_split: process $i of $n ($per s of $seconds): exit $s"; tail -3 "$log.$i"
    [ "$s" = 0 ] || status=1
  done
  return "$status"
}
