#!/usr/bin/env bash
# The installable package (issue 16): ci/package builds bootlab_<version>_<arch>.deb twice (same
# bytes: deterministic); `apt-get install ./bootlab_*.deb` installs it on this (throwaway, root)
# CI machine; then, with the Swift toolchain hidden (a private mount namespace with a tmpfs over
# it), a PATH holding only system directories, no BOOTLAB_* variable and /tmp as the working
# directory, so nothing of the checkout can be found:
#   bootlab --version, MANPAGER=cat man bootlab, nbdkit bootlab --dump-plugin,
#   nbdkit bootlab file=vm.vhdx read by qemu-img, bootlab lab run mbrless-ext4 (every target,
#   real boots) from the installed suite and goldens, writing its report; --update-golden refuses
#   to write into the installation.
# The package is removed afterwards (dpkg -r bootlab); a bootlab package installed before the
# test is refused rather than replaced.
# Tier: CI packages the debug build ci/setup made (BOOTLAB_PACKAGE_BUILD=debug: the same package
# logic, the Swift runtime shipped for bootlab too); the release package (a cold release build of
# its own, minutes on 2 cores) is the flag tier: BOOTLAB_PACKAGE_BUILD=release bash ci/test.d/80-package.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
fail() { echo "80-package: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "installs a package: run as root (CI runs as root)"
if dpkg-query -W -f='${Status}' bootlab 2>/dev/null | grep -q "install ok installed"; then
  fail "a bootlab package is already installed on this machine; this check installs and removes its own"
fi
start=$(date +%s)
W=$(mktemp -d /tmp/bootlab-package-test.XXXXXX)
installed=0
cleanup() {
  if [ "$installed" = 1 ]; then dpkg -r bootlab >/dev/null 2>&1 || echo "80-package: dpkg -r bootlab failed" >&2; fi
  rm -rf "$W"
}
trap cleanup EXIT

# One time for both builds (ci/package's default, the last commit's time, could change in between).
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
export BOOTLAB_PACKAGE_BUILD="${BOOTLAB_PACKAGE_BUILD:-debug}"
echo "80-package: packaging the $BOOTLAB_PACKAGE_BUILD build"
deb=$(BOOTLAB_PACKAGE_OUT="$W/out1" ci/package | tail -1)
echo "80-package: built $deb in $(( $(date +%s) - start )) s"
again=$(BOOTLAB_PACKAGE_OUT="$W/out2" ci/package | tail -1)
cmp "$deb" "$again" || fail "two ci/package runs from the same build gave different .deb files"
version=$(dpkg-deb -f "$deb" Version)
dpkg-deb -c "$deb" > "$W/contents"
for f in ./usr/bin/bootlab ./usr/share/bootlab/Scenarios/drivers.json ./usr/share/bootlab/Scenarios/mbrless-ext4.yaml \
         ./usr/share/bootlab/Golden/mbrless-ext4/kvm-virtio/ ./usr/share/man/man1/bootlab.1.gz ./usr/share/man/man1/bootlab.serve.1.gz \
         ./usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-bootlab-plugin.so \
         ./usr/share/bash-completion/completions/bootlab ./usr/share/zsh/vendor-completions/_bootlab ./usr/share/fish/vendor_completions.d/bootlab.fish; do
  grep -q " $f\$\| $f " "$W/contents" || fail "the package lacks $f"
done
awk '{print $2}' "$W/contents" | sort -u | grep -qv '^root/root$' && fail "files not owned by root: $(awk '{print $2}' "$W/contents" | sort -u)"
depends=$(dpkg-deb -f "$deb" Depends)
for d in libfuse3-3 libguestfs0 libhivex0 libcrypto++8 libzstd1 zlib1g qemu-utils nbdkit fuse3; do
  tr ',' '\n' <<<"$depends" | sed 's/^ *//; s/ .*//' | grep -qxF "$d" || fail "Depends lacks $d: $depends"
done
grep -qiE 'swift|/opt/' <<<"$depends" && fail "Depends names the Swift toolchain: $depends"

# Install it the way a user would (Depends and Recommends resolved by apt).
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$deb" > "$W/apt.log" 2>&1 || fail "apt-get install: $(tail -5 "$W/apt.log")"
installed=1
[ "$(dpkg-query -W -f='${Version}' bootlab)" = "$version" ] || fail "dpkg does not list bootlab $version"
if [ "$BOOTLAB_PACKAGE_BUILD" = release ]; then
  objdump -p /usr/bin/bootlab | awk '$1 == "NEEDED" {print $2}' | grep -iE 'swift|Foundation|dispatch|BlocksRuntime' \
    && fail "/usr/bin/bootlab needs a library of the Swift toolchain"
fi
# Every library either binary loads resolves inside the system or the package's own runtime
# directory (checked again below with the toolchain hidden).
for f in /usr/bin/bootlab /usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-bootlab-plugin.so; do
  [[ "$(ldd "$f")" == *"not found"* ]] && fail "$f has unresolved libraries: $(ldd "$f" | grep 'not found')"
  ldd "$f" | awk '$2 == "=>" {print $3}' | xargs -r realpath -e | grep -vE '^/(usr/)?lib(64)?/' && fail "$f loads a library from outside the system and the package"
done

# The must-show, as a user outside the checkout: toolchain hidden, system PATH, cwd /tmp.
cat > "$W/user.sh" <<'EOF'
set -euo pipefail
W="$1"; version="$2"; toolchain="$3"
fail() { echo "80-package: FAIL: $*" >&2; exit 1; }
mount -t tmpfs -o ro,size=1m none "$toolchain"
command -v swift >/dev/null && fail "the Swift toolchain is still reachable"
[ "$(command -v bootlab)" = /usr/bin/bootlab ] || fail "bootlab on PATH is $(command -v bootlab)"
cd /tmp
[ "$(bootlab --version)" = "$version" ] || fail "bootlab --version: $(bootlab --version)"
MANPAGER=cat man bootlab > "$W/man.txt" 2>&1 || fail "man bootlab: $(cat "$W/man.txt")"
grep -q "Expose an image backup to a hypervisor" "$W/man.txt" || fail "man bootlab lacks the abstract: $(head "$W/man.txt")"
grep -q "bootlab.serve(1)" "$W/man.txt" || fail "man bootlab lacks SEE ALSO bootlab.serve(1)"
MANPAGER=cat man bootlab.serve 2>&1 | grep -q -- "--tls-psk" || fail "man bootlab.serve lacks --tls-psk"
nbdkit bootlab --dump-plugin > "$W/dump.txt" 2>&1 || fail "nbdkit bootlab --dump-plugin: $(cat "$W/dump.txt")"
grep -q "^name=bootlab$" "$W/dump.txt" || fail "--dump-plugin: $(cat "$W/dump.txt")"
grep -q "^path=/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-bootlab-plugin.so$" "$W/dump.txt" || fail "--dump-plugin path: $(cat "$W/dump.txt")"
# nbdkit by plugin name, and bootlab serve finding the installed plugin.
mkdir "$W/vm"
head -c 8M /dev/urandom > "$W/disk.raw"
bootlab backup create "$W/disk.raw" "$W/vm/vm.bli" --compress zstd --seed package >/dev/null
bootlab expose "$W/vm/vm.bli" --out "$W/vm/vm.vhdx" >/dev/null
nbdkit -U "$W/nbd.sock" --readonly --foreground bootlab file="$W/vm/vm.vhdx" raw=true > "$W/nbdkit.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$W/nbd.sock" ] && break; sleep 0.1; done
# 8 MiB of random bytes is no disk: expose composes it as a volume at LBA 2048 (1 MiB) of a 9 MiB disk.
status=0; qemu-img convert -f raw -O raw "nbd+unix:///?socket=$W/nbd.sock" "$W/served.raw" > "$W/convert.log" 2>&1 || status=$?
kill "$pid"; wait "$pid" || true
[ "$status" = 0 ] || fail "reading nbdkit bootlab file=vm.vhdx raw=true: $(cat "$W/convert.log" "$W/nbdkit.log")"
[ "$(stat -c %s "$W/served.raw")" = $((9 << 20)) ] || fail "nbdkit bootlab served $(stat -c %s "$W/served.raw") bytes, expected 9 MiB"
tail -c +$(((1 << 20) + 1)) "$W/served.raw" | cmp - "$W/disk.raw" || fail "the volume served by nbdkit bootlab differs from the backed-up bytes"
bootlab serve "$W/vm/vm.vhdx" --socket "$W/s.sock" --print-command | grep -q " /usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-bootlab-plugin.so " \
  || fail "bootlab serve does not use the installed plugin: $(bootlab serve "$W/vm/vm.vhdx" --socket "$W/s.sock" --print-command 2>&1)"
# The same library is BootLab's nbdkit filter (serve's one-process mode over an nbdkit source):
# it loads as a filter (filter_init survives strip; built against this nbdkit's version), and
# serve puts it over the source's plugin.
nbdkit --filter=/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-bootlab-plugin.so null --help > "$W/filter.txt" 2>&1 \
  && grep -q "^filter: bootlab" "$W/filter.txt" || fail "the installed library does not load as an nbdkit filter: $(cat "$W/filter.txt")"
(cd "$W/vm" && cp ../disk.raw vol.img && bootlab expose --source nbdkit:file:file=vol.img --out src.vhdx >/dev/null)
bootlab serve "$W/vm/src.vhdx" --socket "$W/s.sock" --allow-source-plugin file --print-command \
  | grep -q -- "--filter=/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-bootlab-plugin.so file file=vol.img bootlab-file=" \
  || fail "bootlab serve of an nbdkit source does not use the installed filter: $(bootlab serve "$W/vm/src.vhdx" --socket "$W/s.sock" --allow-source-plugin file --print-command 2>&1)"
# The installed goldens are read-only for the lab.
status=0; bootlab lab run mbrless-ext4 --target kvm-virtio --update-golden > "$W/update.log" 2>&1 || status=$?
[ "$status" = 1 ] && grep -q "belongs to the installed package" "$W/update.log" || fail "--update-golden on the installed goldens: $(cat "$W/update.log")"
# The lab from /tmp: the installed suite, goldens and plugin.
bootlab lab run mbrless-ext4 --report "$W/report" > "$W/lab.out" 2> "$W/lab.err" || fail "bootlab lab run mbrless-ext4: $(tail -30 "$W/lab.err") $(cat "$W/lab.out")"
grep -q "scenarios /usr/share/bootlab/Scenarios (the install prefix of this bootlab), goldens /usr/share/bootlab/Golden$" "$W/lab.err" \
  || fail "the lab did not use the installed data: $(grep 'scenarios' "$W/lab.err")"
[ -f "$W/report/report.html" ] && [ -f "$W/report/report.json" ] || fail "no report written"
cat "$W/lab.out"
EOF
# The toolchain's root (…/usr/bin/swift → …), hidden below.
toolchain=$(cd "$(dirname "$(readlink -f "$(command -v swift)")")/../.." && pwd)
[ "$toolchain" != / ] && [ "$toolchain" != /usr ] || fail "the Swift toolchain is installed in $toolchain: cannot hide it"
# A PATH of system directories only; no BOOTLAB_* variable (the cache location stays: it is shared).
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb ${BOOTLAB_CACHE:+BOOTLAB_CACHE=$BOOTLAB_CACHE} \
  ${BOOTLAB_DEBIAN_MIRROR:+BOOTLAB_DEBIAN_MIRROR=$BOOTLAB_DEBIAN_MIRROR} \
  unshare --mount --propagation private bash "$W/user.sh" "$W" "$version" "$toolchain" || fail "the installed package (see above)"
python3 - "$W/report/report.json" <<'EOF' || fail "the lab's report"
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
cells = sum(s.get(k, 0) for k in ("pass", "drift", "fail", "skip"))
print(f"80-package: lab report summary {s}")
sys.exit(0 if cells == 4 and s.get("fail", 0) == 0 and s.get("skip", 0) == 0 else 1)
EOF
dpkg -r bootlab >/dev/null
installed=0
[ ! -e /usr/bin/bootlab ] && [ ! -e /usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-bootlab-plugin.so ] || fail "dpkg -r left files behind"
echo "80-package: passed in $(( $(date +%s) - start )) s"
