#!/usr/bin/env bash
# Builds the buggy example reader into $1 (default: this directory), with AddressSanitizer.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/buggy_vhdx_regions}"
cc=$(command -v clang || command -v cc)
# (clang with ld.gold warns once per ASan helper symbol: harmless, filtered)
"$cc" -O1 -g -fsanitize=address -fno-omit-frame-pointer -o "$out" "$here/buggy_vhdx_regions.c" 2> >(grep -v "Cannot export local symbol" >&2)
