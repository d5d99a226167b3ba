#!/usr/bin/env bash
# A boot runner for `boot_runner:` in a target file (docs/certifying-a-target.md): boots one disk
# file on an IDE controller, with Hyper-V generation 1's legacy network adapter (tulip: the
# profile's nic, which the nic validator checks), and leaves the guest's serial console in a file.
#   qemu-ide-runner.sh DISK FORMAT CONSOLE [MEMORY_MIB]
# CONSOLE "-" prints the console on stdout instead (`console: stdout`).
# The disk is read-only and must stay unmodified: snapshot=on keeps the guest's writes in a
# temporary overlay. A runner for a real host does the same with a differencing disk.
set -euo pipefail
if [[ $# -lt 3 ]]; then
    echo "usage: $0 DISK FORMAT CONSOLE [MEMORY_MIB]" >&2
    exit 2
fi
disk=$1 format=$2 console=$3 memory=${4:-256}
[[ -r $disk ]] || { echo "$0: cannot read $disk" >&2; exit 2; }
if [[ $console == - ]]; then serial=stdio; else serial="file:$console"; fi
# exec: the lab's timeout signal reaches QEMU itself.
exec qemu-system-x86_64 -accel tcg -machine pc -m "$memory" -display none -monitor none -nic user,model=tulip,restrict=on -no-reboot \
    -drive "file=${disk//,/,,},format=$format,if=ide,snapshot=on" -serial "$serial"
