#!/usr/bin/env bash
# HTTP load run: the shop's GET routes over loopback, with the bulwark stack and without it
# (`--bare`: the same handlers, no bulwark layer), measured by the `load` example.
#
#   bash benches/http-load.sh            # 10 s per route and variant, 32 connections
#   DURATION=5s CONNECTIONS=16 bash benches/http-load.sh
#   RUST_LOG=info bash benches/http-load.sh   # with one JSON log line per request
#
# The shop's global per-IP limit is raised for the run (`SHOP_GLOBAL_RPS`), so the limiter
# still checks every request but the load generator's one address is not refused. The log
# filter is `warn` unless RUST_LOG says otherwise: the request log then takes its pass-through
# path (request ids, metrics), and formatting a JSON line per request, which is the
# subscriber's cost rather than the layers', is measured separately with RUST_LOG=info (the
# lines go to /dev/null). Prints one line per route and variant, then the
# ratio of requests/s with the stack to without it.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10s}"
export RUST_LOG="${RUST_LOG:-warn}"
CONNECTIONS="${CONNECTIONS:-32}"
WARM_UP="${WARM_UP:-1s}"
PORT_STACK="${PORT_STACK:-3901}"
PORT_BARE="${PORT_BARE:-3902}"

cargo build --release --locked --example shop --example load >/dev/null 2>&1
SHOP=target/release/examples/shop
LOAD=target/release/examples/load

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

SHOP_GLOBAL_RPS=1000000000 SHOP_ADDR="127.0.0.1:${PORT_STACK}" "$SHOP" >/dev/null 2>&1 &
pids+=($!)
SHOP_ADDR="127.0.0.1:${PORT_BARE}" "$SHOP" --bare >/dev/null 2>&1 &
pids+=($!)

for port in "$PORT_STACK" "$PORT_BARE"; do
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:${port}/healthz" >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
done

# route | extra header
routes=(
  "/healthz|"
  "/products|"
  "/recommendations|"
  "/ai/summary|x-user-tier: premium"
)

echo "RUST_LOG=${RUST_LOG}, ${CONNECTIONS} connections, ${DURATION} per run"
printf '%-18s %-6s %10s %8s %8s %8s %s\n' route stack "req/s" "p50 µs" "p99 µs" "errors" "status classes"
for entry in "${routes[@]}"; do
  path="${entry%%|*}"
  header="${entry#*|}"
  declare -A rps=()
  for variant in stack bare; do
    port="$PORT_STACK"; [ "$variant" = bare ] && port="$PORT_BARE"
    args=(--url "http://127.0.0.1:${port}${path}" --connections "$CONNECTIONS" --duration "$DURATION" --warm-up "$WARM_UP")
    [ -n "$header" ] && args+=(--header "$header")
    out="$("$LOAD" "${args[@]}")"
    rps[$variant]="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["requests_per_second"])' "$out")"
    python3 - "$path" "$variant" "$out" <<'EOF'
import json, sys
path, variant, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
classes = " ".join(f"{k}={out[k]}" for k in ("2xx", "3xx", "4xx", "5xx") if out[k])
print(f"{path:<18} {variant:<6} {out['requests_per_second']:>10.0f} {out['p50_us']:>8} {out['p99_us']:>8} {out['errors']:>8} {classes}")
EOF
  done
  python3 -c 'import sys; s, b = float(sys.argv[2]), float(sys.argv[3]); print(f"{sys.argv[1]:<18} stack/bare = {s / b:.2f}")' "$path" "${rps[stack]}" "${rps[bare]}"
done
