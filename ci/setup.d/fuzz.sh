#!/usr/bin/env bash
# bootlab fuzz (issue 17): a parser we did not write, built with coverage instrumentation.
# Installs ci/packages/fuzz (ci/setup itself reads only ci/packages/*.txt), adds a deb-src entry
# for the machine's own Debian URIs, fetches libvhdi's source package and builds vhdiinfo with
# clang's SanitizerCoverage (trace-pc-guard) plus Tests/FuzzerTests' counter shim into
# $BOOTLAB_CACHE/libvhdi-cov. Idempotent: a finished build is reused.
set -euo pipefail
cd "$(dirname "$0")/../.."
cache="${BOOTLAB_CACHE:-/var/tmp/bootlab-cache}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

mapfile -t wanted < <(sed 's/#.*//' ci/packages/fuzz | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

src=/etc/apt/sources.list.d/bootlab-deb-src.sources
if [ ! -f "$src" ]; then
  # The same URIs, suites and keys as the binary entries, with Types: deb-src.
  sed -n '/^Types:/,$p' /etc/apt/sources.list.d/debian.sources | sed 's/^Types: .*/Types: deb-src/' | $SUDO tee "$src" >/dev/null
  $SUDO apt-get update -q
fi

dir="$cache/libvhdi-cov"
if [ ! -x "$dir/vhdiinfo" ]; then
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  (cd "$dir.tmp" && apt-get source -q libvhdi >/dev/null)
  tree=$(find "$dir.tmp" -maxdepth 1 -mindepth 1 -type d -name 'libvhdi-*' | head -1)
  cc=$(command -v clang)
  "$cc" -O2 -c Sources/Fuzzer/Coverage/guard_counter.c -o "$dir.tmp/guard_counter.o"
  # The Debian patches touch configure.ac; the shipped configure is fine, so keep autotools asleep.
  (cd "$tree" && touch aclocal.m4 && sleep 1 && touch configure && find . -name Makefile.in -exec touch {} + \
     && touch common/config.h.in \
     && CC="$cc" CFLAGS="-fsanitize-coverage=trace-pc-guard -O1" LDFLAGS="$dir.tmp/guard_counter.o" \
        ./configure --disable-shared --enable-static >/dev/null \
     && make -j2 >/dev/null 2>&1)
  mkdir -p "$dir.new"
  cp "$tree/vhditools/vhdiinfo" "$dir.new/vhdiinfo"
  rm -rf "$dir" && mv "$dir.new" "$dir" && rm -rf "$dir.tmp"
  echo "ci/setup.d/fuzz.sh: built $dir/vhdiinfo with edge coverage"
fi
