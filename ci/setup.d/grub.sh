#!/bin/bash
# Build (or find cached) the debootstrapped Debian volume the GRUB must-show boots, so the first
# `swift test` does not pay ~80 s for it. Cached under $BOOTLAB_CACHE/debian-grub/<key>.
set -euo pipefail
cd "$(dirname "$0")/../.."
Scenarios/machines/make-debian-grub.sh >/dev/null
