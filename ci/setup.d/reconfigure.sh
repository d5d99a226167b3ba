#!/bin/bash
# Warm the libguestfs appliance once (~680 MB under /var/tmp/.guestfs-0) so the first
# reconfiguration test does not pay for building it. KVM here cannot run it: force TCG.
# Once: libguestfs-test-tool (≈ 23 s: it boots the appliance under TCG even when it is built)
# runs again only when the appliance files are missing or libguestfs, supermin, QEMU or the
# host kernel changed since it last passed (a stamp under $BOOTLAB_CACHE). libguestfs itself
# rebuilds a stale appliance at its next launch, so a stale stamp costs time, never a result.
set -euo pipefail
export LIBGUESTFS_BACKEND_SETTINGS=force_tcg
stamp=${BOOTLAB_CACHE:-/var/tmp/bootlab-cache}/libguestfs-test-tool.ok
appliance=${LIBGUESTFS_CACHEDIR:-${TMPDIR:-/var/tmp}}/.guestfs-$(id -u)/appliance.d
inputs=$(dpkg-query -W libguestfs0 supermin qemu-system-x86 2>&1; uname -r)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ] \
   && [ -s "$appliance/kernel" ] && [ -s "$appliance/initrd" ] && [ -s "$appliance/root" ]; then
  exit 0
fi
if ! libguestfs-test-tool 2>&1 | tail -1 | grep -q 'TEST FINISHED OK'; then
  echo "reconfigure: libguestfs-test-tool failed (run it by hand to see why)" >&2
  exit 1
fi
mkdir -p "$(dirname "$stamp")"
printf '%s\n' "$inputs" > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
