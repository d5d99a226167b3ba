#!/usr/bin/env bash
# Warm the lab's kernel cache: download (not install) the current Debian cloud and generic
# kernels and build their modules.dep. Idempotent: an unpacked kernel is reused.
set -euo pipefail
cache="${BOOTLAB_CACHE:-/var/tmp/bootlab-cache}/kernels"
mkdir -p "$cache"
for meta in linux-image-cloud-amd64 linux-image-amd64; do
  pkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-/{print $2; exit}')
  ver=$(apt-cache policy "$pkg" | awk '/Candidate:/{print $2}')
  dir="$cache/${pkg}_${ver}"
  [ -f "$dir/boot/vmlinuz-${pkg#linux-image-}" ] && continue
  tmp=$(mktemp -d "$cache/.setup-XXXXXX")
  (cd "$tmp" && apt-get download "$pkg=$ver" >/dev/null 2>&1)
  dpkg-deb -x "$tmp"/*.deb "$tmp/tree"
  depmod -b "$tmp/tree" "${pkg#linux-image-}"
  rm -rf "$dir" && mv "$tmp/tree" "$dir" && rm -rf "$tmp"
  echo "ci/setup.d/lab.sh: cached $pkg $ver"
done
