# Sourced by the ci/ scripts (which all run with set -euo pipefail).

# Drops SwiftPM's "[12/345] Compiling …" progress lines. It never fails itself (grep exits 1 when
# it prints nothing), so under pipefail `swift build … 2>&1 | quiet` has swift build's status.
quiet() { grep -vE '^\[[0-9]+/[0-9]+\] ' || true; }
