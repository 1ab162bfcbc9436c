#!/usr/bin/env bash
# A first transfer figure: `peernet get` of one file on loopback beside a
# plain TCP copy of the same file, measured in the same run.
#
#   bench/first-get.sh [SIZE_MIB]      (default 1024)
#
# Needs a release build (`cargo build --release --locked`) and python3.
# Binds only to 127.0.0.1; every process it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
bin=target/release/peernet
[ -x "$bin" ] || { echo "build first: cargo build --release --locked" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/file.bin"
sync

# Reference: TCP over loopback, sender uses sendfile, receiver writes to disk
# with 256 KiB reads.
tcp=$(python3 - "$work/file.bin" "$work/tcp-copy.bin" <<'PY'
import socket, sys, threading, time
src, dst = sys.argv[1], sys.argv[2]
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
def send():
    c, _ = srv.accept()
    with open(src, "rb") as f:
        c.sendfile(f)
    c.close()
t = threading.Thread(target=send); t.start()
start = time.perf_counter()
s = socket.create_connection(("127.0.0.1", port))
buf = bytearray(256 * 1024); view = memoryview(buf)
with open(dst, "wb") as out:
    while True:
        n = s.recv_into(buf)
        if n == 0: break
        out.write(view[:n])
    out.flush()
elapsed = time.perf_counter() - start
t.join(); print(f"{elapsed:.3f}")
PY
)
cmp -s "$work/file.bin" "$work/tcp-copy.bin"
rm "$work/tcp-copy.bin"

export RUST_LOG=error
t0=$(date +%s.%N)
"$bin" --data-dir "$work/a" up --bind 127.0.0.1:0 --nick seeder --share "$work/file.bin" > "$work/a.out" 2>&1 &
pids+=($!)
until grep -q '^ticket: ' "$work/a.out"; do sleep 0.1; done
t1=$(date +%s.%N)
ticket=$(grep '^ticket: ' "$work/a.out" | cut -d' ' -f2)
"$bin" --data-dir "$work/b" up --bind 127.0.0.1:0 --nick leecher --join "$ticket" --downloads "$work/down" > "$work/b.out" 2>&1 &
pids+=($!)
until grep -q '^ticket: ' "$work/b.out"; do sleep 0.1; done
g0=$(date +%s.%N)
"$bin" --data-dir "$work/b" get file.bin > /dev/null
g1=$(date +%s.%N)
cmp -s "$work/file.bin" "$work/down/file.bin"

python3 - "$size_mib" "$tcp" "$t0" "$t1" "$g0" "$g1" <<'PY'
import sys
mib, tcp, t0, t1, g0, g1 = int(sys.argv[1]), *map(float, sys.argv[2:])
get, share = g1 - g0, t1 - t0
mb = mib * 1024 * 1024 / 1e6
print(f"file: {mib} MiB, loopback, bytes verified on both paths")
print(f"{'what':<38} {'seconds':>8} {'MB/s':>8}")
print(f"{'plain TCP copy (reference)':<38} {tcp:>8.2f} {mb/tcp:>8.0f}")
print(f"{'peernet get (warm: already hashed)':<38} {get:>8.2f} {mb/get:>8.0f}")
print(f"{'peernet up --share (import + hash)':<38} {share:>8.2f} {mb/share:>8.0f}")
print(f"ratio get / TCP: {get/tcp:.2f}x the time ({(mb/get)/(mb/tcp):.2f} of the throughput)")
PY
