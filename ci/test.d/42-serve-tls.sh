#!/usr/bin/env bash
# `bootlab serve --tcp` for a hypervisor on another host, over loopback, with qemu-img as the
# remote client: TCP without TLS is refused unless --insecure; with a PSK (psktool) and with X.509
# (certtool) the client that holds the key reads VHDX bytes whose disk equals the original disk;
# a client with another key, and a client without TLS, are rejected with nbdkit's/QEMU's TLS errors
# and read nothing. (docs/frontends.md, "Remote serving with TLS".)
# Tier: CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
for t in psktool certtool qemu-img nbdkit; do
  command -v "$t" >/dev/null || { echo "42-serve-tls: FAIL: $t is not installed (ci/packages/frontends.txt)" >&2; exit 1; }
done
# Build (a no-op after ci/setup) so a stale binary never runs; a failed build fails this check.
swift build 2>&1 | quiet
B="$PWD/.build/debug/bootlab"
W=$(mktemp -d /tmp/bootlab-tls.XXXXXX)
SERVE_PID=
cleanup() {
  [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "42-serve-tls: FAIL: $*" >&2; exit 1; }
cd "$W"

# start_serve ARGS…: bootlab serve on 127.0.0.1, port 0 (a free one); sets PORT from its stderr.
start_serve() {
  "$B" serve plug/vm.vhdx --tcp 127.0.0.1:0 "$@" > serve.log 2>&1 &
  SERVE_PID=$!
  PORT=
  for _ in $(seq 100); do
    PORT=$(sed -n 's/^bootlab serve: listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' serve.log)
    [ -n "$PORT" ] && break
    kill -0 "$SERVE_PID" 2>/dev/null || fail "bootlab serve $* exited: $(cat serve.log)"
    sleep 0.1
  done
  [ -n "$PORT" ] && [ "$PORT" != 0 ] || fail "bootlab serve printed no port: $(cat serve.log)"
}
stop_serve() {
  kill "$SERVE_PID"
  local status=0; wait "$SERVE_PID" || status=$?
  SERVE_PID=
  [ "$status" = 0 ] || fail "bootlab serve exited $status on SIGTERM: $(cat serve.log)"
}
# vhdx_over_nbd TLSCREDS: the image-opts of the VHDX served at $PORT (TLSCREDS empty: no TLS).
vhdx_over_nbd() {
  echo "driver=vhdx,file.driver=nbd,file.server.type=inet,file.server.host=127.0.0.1,file.server.port=$PORT${1:+,file.tls-creds=$1}"
}

# A 64 MiB disk: MBR, a FAT32 partition with a few MiB of random data, exposed as a plugin VHDX.
mkdir plug
truncate -s 64M disk.raw
printf 'label: dos\nlabel-id: 0x0badcafe\nstart=2048, size=110592, type=c, bootable\n' | sfdisk -q disk.raw
dd if=/usr/lib/syslinux/mbr/mbr.bin of=disk.raw bs=440 count=1 conv=notrunc status=none
truncate -s $((110592 * 512)) part.raw
mkfs.fat -F 32 -h 2048 -i 1234abcd part.raw >/dev/null
head -c 2000000 /dev/urandom > big.bin
mcopy -i part.raw big.bin ::/big.bin
dd if=part.raw of=disk.raw bs=1M seek=1 conv=notrunc status=none
"$B" backup create disk.raw plug/vm.bli --partition 1 --compress zstd --seed tls >/dev/null
"$B" expose plug/vm.bli --out plug/vm.vhdx >/dev/null

# 1. TCP without TLS: refused before anything listens, unless --insecure.
status=0; "$B" serve plug/vm.vhdx --tcp 127.0.0.1:0 > refused.log 2>&1 || status=$?
[ "$status" = 1 ] || fail "serve --tcp without TLS exited $status, expected 1: $(cat refused.log)"
grep -q "refusing to serve over TCP without TLS" refused.log || fail "serve --tcp without TLS: unclear message: $(cat refused.log)"
status=0; "$B" serve plug/vm.vhdx --tcp 127.0.0.1:0 --tls-psk missing.psk > refused.log 2>&1 || status=$?
[ "$status" = 1 ] && grep -q "PSK file missing.psk is missing" refused.log || fail "a missing PSK file was not refused clearly: $(cat refused.log)"
start_serve --insecure
qemu-img compare --image-opts "driver=raw,file.filename=$W/disk.raw" "$(vhdx_over_nbd)" >/dev/null || fail "--insecure: the served VHDX's disk differs from the original"
stop_serve

# 2. PSK: the key holder reads the disk; another key and no TLS are rejected.
mkdir server-keys client-keys other-keys
psktool -u qemu -p server-keys/keys.psk >/dev/null
cp server-keys/keys.psk client-keys/keys.psk
psktool -u qemu -p other-keys/keys.psk >/dev/null
cmp -s server-keys/keys.psk other-keys/keys.psk && fail "psktool made the same key twice"
start_serve --tls-psk server-keys/keys.psk
grep -q -- "--tls=require" <("$B" serve plug/vm.vhdx --tcp 127.0.0.1:1 --tls-psk server-keys/keys.psk --print-command) \
  || fail "--tls-psk does not make nbdkit require TLS"
psk() { echo "tls-creds-psk,id=tls0,endpoint=client,username=qemu,dir=$W/$1"; }
qemu-img compare --object "$(psk client-keys)" --image-opts "driver=raw,file.filename=$W/disk.raw" "$(vhdx_over_nbd tls0)" >/dev/null \
  || fail "PSK: the served VHDX's disk differs from the original: $(cat serve.log)"
qemu-img convert -O raw --object "$(psk client-keys)" --image-opts "$(vhdx_over_nbd tls0)" read.raw
cmp read.raw disk.raw || fail "PSK: converted bytes differ from the original disk"
status=0; qemu-img convert -O raw --object "$(psk other-keys)" --image-opts "$(vhdx_over_nbd tls0)" wrong.raw > wrong.log 2>&1 || status=$?
[ "$status" != 0 ] || fail "PSK: a client with another key read the disk"
[ ! -s wrong.raw ] || fail "PSK: a client with another key got bytes"
grep -qiE "tls|handshake|decryption|mac" wrong.log || fail "PSK: the wrong-key failure does not name TLS: $(cat wrong.log)"
echo "42-serve-tls: another key: $(head -1 wrong.log)"
status=0; qemu-img info --image-opts "$(vhdx_over_nbd)" > plain.log 2>&1 || status=$?
[ "$status" != 0 ] || fail "PSK: a client without TLS read the disk"
grep -qi "tls" plain.log || fail "PSK: the no-TLS failure does not name TLS: $(cat plain.log)"
echo "42-serve-tls: no TLS: $(head -1 plain.log)"
stop_serve

# 3. X.509: a CA, a server certificate for 127.0.0.1; a client trusting another CA is rejected.
make_ca() { # DIR: ca-key.pem, ca-cert.pem
  mkdir -p "$1"
  certtool --generate-privkey --outfile "$1/ca-key.pem" 2>/dev/null
  printf 'cn = BootLab test CA %s\nca\ncert_signing_key\nexpiration_days = 2\n' "$1" > "$1/ca.info"
  certtool --generate-self-signed --load-privkey "$1/ca-key.pem" --template "$1/ca.info" --outfile "$1/ca-cert.pem" 2>/dev/null
}
make_ca ca; make_ca other-ca
mkdir certs client-certs other-client
cp ca/ca-cert.pem certs/ca-cert.pem
certtool --generate-privkey --outfile certs/server-key.pem 2>/dev/null
printf 'cn = 127.0.0.1\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n' > server.info
certtool --generate-certificate --load-privkey certs/server-key.pem --load-ca-certificate ca/ca-cert.pem \
  --load-ca-privkey ca/ca-key.pem --template server.info --outfile certs/server-cert.pem 2>/dev/null
cp ca/ca-cert.pem client-certs/ca-cert.pem
cp other-ca/ca-cert.pem other-client/ca-cert.pem
start_serve --tls-certificates certs
x509() { echo "tls-creds-x509,id=tls0,endpoint=client,verify-peer=on,dir=$W/$1"; }
qemu-img compare --object "$(x509 client-certs)" --image-opts "driver=raw,file.filename=$W/disk.raw" "$(vhdx_over_nbd tls0)" >/dev/null \
  || fail "X.509: the served VHDX's disk differs from the original: $(cat serve.log)"
status=0; qemu-img info --object "$(x509 other-client)" --image-opts "$(vhdx_over_nbd tls0)" > wrong.log 2>&1 || status=$?
[ "$status" != 0 ] || fail "X.509: a client trusting another CA accepted the server"
grep -qiE "certificate|tls" wrong.log || fail "X.509: the untrusted-server failure does not name the certificate: $(cat wrong.log)"
echo "42-serve-tls: untrusted server certificate: $(head -1 wrong.log)"
stop_serve
echo "42-serve-tls: passed (refusal without TLS, --insecure, PSK, X.509, rejected clients)"
