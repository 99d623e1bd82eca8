#!/usr/bin/env bash
# Instructions and allocations per request of the shop's own request handling, with the bulwark
# stack and without it (`--bare`), counted by callgrind: unlike requests/s on a shared 2-core
# machine, these counts repeat to within a few per cent from run to run, so a change of a few
# hundred instructions per request can be seen.
#
#   bash benches/http-instructions.sh                 # the load run's GET routes
#   ROUTES="/healthz /ai/summary" bash benches/http-instructions.sh
#   SHOP=/tmp/shop-before bash benches/http-instructions.sh   # another build of the shop
#
# Needs valgrind, curl and python3. For each route and variant, the shop runs under callgrind,
# collecting only inside hyper's connection dispatcher (so start-up, timers and background
# threads are not counted), and answers SHORT then LONG requests over one keep-alive
# connection; (LONG - SHORT) / (LONG - SHORT requests) is the cost of one request, with
# whatever is paid once per connection cancelled out. Kernel time is not counted.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUTES="${ROUTES:-/healthz /recommendations /ai/summary}"
SHORT="${SHORT:-100}"
LONG="${LONG:-600}"
PORT="${PORT:-3941}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

if [ -z "${SHOP:-}" ]; then
  cargo build --release --locked --example shop >/dev/null 2>&1
  SHOP=target/release/examples/shop
fi

# Sends `n` GET requests for `route` over one connection, reading each whole answer.
client() {
  python3 - "$1" "$2" "$PORT" <<'PY'
import socket, sys
route, n, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
extra = "x-user-tier: premium\r\n" if route == "/ai/summary" else ""
req = f"GET {route} HTTP/1.1\r\nhost: bench\r\n{extra}\r\n".encode()
s = socket.create_connection(("127.0.0.1", port))
for _ in range(n):
    s.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, body = buf.partition(b"\r\n\r\n")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n")
                  if l.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += s.recv(65536)
s.close()
PY
}

# Runs the shop (`$1`: stack or bare) under callgrind for `$3` requests to `$2`.
measure() {
  local args=()
  [ "$1" = bare ] && args=(--bare)
  SHOP_GLOBAL_RPS=1000000000 SHOP_ADDR="127.0.0.1:${PORT}" RUST_LOG=warn \
    valgrind --tool=callgrind '--toggle-collect=*Dispatcher*poll_catch*' \
    --callgrind-out-file="$OUT/$1-$3.out" "$SHOP" "${args[@]}" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:${PORT}/healthz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  client "$2" "$3"
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
}

# Instructions, and calls of the allocator, in a callgrind output.
totals() {
  local tree
  tree="$(callgrind_annotate --tree=caller "$1" 2>/dev/null)"
  local ir allocs
  ir="$(grep "PROGRAM TOTALS" <<<"$tree" | awk '{gsub(",", "", $1); print $1}')"
  allocs="$(grep -E "< .*__rust_alloc \([0-9,]+x\)" <<<"$tree" | head -1 \
    | sed -E 's/.*\(([0-9,]+)x\).*/\1/; s/,//g')"
  echo "$ir ${allocs:-0}"
}

printf '%-18s %-6s %14s %14s\n' route stack "instr/request" "allocs/request"
for route in $ROUTES; do
  for variant in stack bare; do
    measure "$variant" "$route" "$SHORT"
    measure "$variant" "$route" "$LONG"
    read -r ir_s al_s < <(totals "$OUT/$variant-$SHORT.out")
    read -r ir_l al_l < <(totals "$OUT/$variant-$LONG.out")
    n=$((LONG - SHORT))
    printf '%-18s %-6s %14d %14.1f\n' "$route" "$variant" $(((ir_l - ir_s) / n)) \
      "$(python3 -c "print(($al_l - $al_s) / $n)")"
  done
done
