#!/usr/bin/env bash
# HTTP load run: the shop's GET routes over loopback, with the bulwark stack and without it
# (`--bare`: the same handlers, no bulwark layer), measured by the `load` example.
#
#   bash benches/http-load.sh            # 10 s per route and variant, 32 connections
#   DURATION=5s CONNECTIONS=16 bash benches/http-load.sh
#   RUST_LOG=info bash benches/http-load.sh   # with one JSON log line per request
#   ROUTES="/healthz /ai/summary" bash benches/http-load.sh   # only these routes
#   PIN=1 bash benches/http-load.sh      # shops on core 0, the load generator on core 1
#   SHOP_WORKERS=1 bash benches/http-load.sh  # each shop on one tokio worker thread
#
# The shop's global per-IP limit is raised for the run (`SHOP_GLOBAL_RPS`), so the limiter
# still checks every request but the load generator's one address is not refused. The log
# filter is `warn` unless RUST_LOG says otherwise: the request log then takes its pass-through
# path (request ids, metrics), and formatting a JSON line per request, which is the
# subscriber's cost rather than the layers', is measured separately with RUST_LOG=info (the
# lines go to /dev/null). Each route is run REPEAT times per variant, alternating stack and
# bare so that a slow spell of the shared machine hits both; prints the median run per route and
# variant, with the server's CPU time per request (user + system from /proc, so it does not
# depend on how the load generator was scheduled) and its user part (the stack makes no system
# call of its own, so its cost is user time; system time per request changes with how often
# the processes sleep and wake), then two ratios: requests/s with the stack
# to without it, and bare to stack CPU per request (the throughput the stack would keep on a
# server whose cores it had to itself); then, sorted, the requests/s ratio of each stack run
# to the bare run that followed it, which shows how much one pair of runs can mislead.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10s}"
export RUST_LOG="${RUST_LOG:-warn}"
CONNECTIONS="${CONNECTIONS:-32}"
WARM_UP="${WARM_UP:-1s}"
REPEAT="${REPEAT:-3}"
PORT_STACK="${PORT_STACK:-3901}"
PORT_BARE="${PORT_BARE:-3902}"

cargo build --release --locked --example shop --example load >/dev/null 2>&1
SHOP=target/release/examples/shop
LOAD=target/release/examples/load
# `PIN=1`: the shops on the first core and the load generator on the second, so that neither
# takes the other's core (needs `taskset` and two cores). `SHOP_WORKERS=N`: the shops run N
# tokio worker threads (`TOKIO_WORKER_THREADS`; tokio's default is one per core); the load
# generator keeps its own.
PIN_SHOP=()
PIN_LOAD=()
if [ "${PIN:-0}" = 1 ]; then
  PIN_SHOP=(taskset -c 0)
  PIN_LOAD=(taskset -c 1)
fi
SHOP_ENV=()
if [ -n "${SHOP_WORKERS:-}" ]; then
  SHOP_ENV=(env "TOKIO_WORKER_THREADS=${SHOP_WORKERS}")
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

SHOP_GLOBAL_RPS=1000000000 SHOP_ADDR="127.0.0.1:${PORT_STACK}" "${SHOP_ENV[@]}" "${PIN_SHOP[@]}" "$SHOP" >/dev/null 2>&1 &
pids+=($!)
SHOP_ADDR="127.0.0.1:${PORT_BARE}" "${SHOP_ENV[@]}" "${PIN_SHOP[@]}" "$SHOP" --bare >/dev/null 2>&1 &
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

# Server CPU time of a process, user and system, in clock ticks, from /proc.
cpu_ticks() { awk '{print $14 "," $15}' "/proc/$1/stat"; }

echo "RUST_LOG=${RUST_LOG}, ${CONNECTIONS} connections, ${DURATION} per run, ${REPEAT} runs per variant (alternating, medians)"
printf '%-18s %-6s %10s %8s %8s %8s %12s %9s %s\n' route stack "req/s" "p50 µs" "p99 µs" "errors" "cpu µs/req" "of it user" "status classes"
for entry in "${routes[@]}"; do
  path="${entry%%|*}"
  header="${entry#*|}"
  if [ -n "${ROUTES:-}" ] && [[ " ${ROUTES} " != *" ${path} "* ]]; then continue; fi
  runs=()
  for _ in $(seq 1 "$REPEAT"); do
    for variant in stack bare; do
      port="$PORT_STACK"; pid="${pids[0]}"
      if [ "$variant" = bare ]; then port="$PORT_BARE"; pid="${pids[1]}"; fi
      args=(--url "http://127.0.0.1:${port}${path}" --connections "$CONNECTIONS" --duration "$DURATION" --warm-up "$WARM_UP")
      [ -n "$header" ] && args+=(--header "$header")
      before="$(cpu_ticks "$pid")"
      out="$("${PIN_LOAD[@]}" "$LOAD" "${args[@]}")"
      after="$(cpu_ticks "$pid")"
      runs+=("${variant}|$((${after%,*} - ${before%,*})),$((${after#*,} - ${before#*,}))|${out}")
    done
  done
  python3 - "$path" "$(getconf CLK_TCK)" "${runs[@]}" <<'EOF2'
import json, statistics, sys
path, tck, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
by = {"stack": [], "bare": []}
for r in runs:
    variant, ticks, out = r.split("|", 2)
    user, system = (int(t) for t in ticks.split(","))
    out = json.loads(out)
    # CPU over the whole run (warm-up included) per request counted after the warm-up: the
    # same small overcount for both variants.
    per_request = 1e6 / tck / max(out["requests"], 1)
    out["cpu_us"] = (user + system) * per_request
    out["user_us"] = user * per_request
    by[variant].append(out)
pairs = list(zip(by["stack"], by["bare"]))
med = {}
for variant, outs in by.items():
    outs.sort(key=lambda o: o["requests_per_second"])
    m = outs[len(outs) // 2]
    cpu = statistics.median(o["cpu_us"] for o in outs)
    user = statistics.median(o["user_us"] for o in outs)
    med[variant] = (m["requests_per_second"], cpu)
    classes = " ".join(f"{k}={m[k]}" for k in ("2xx", "3xx", "4xx", "5xx") if m[k])
    print(f"{path:<18} {variant:<6} {m['requests_per_second']:>10.0f} {m['p50_us']:>8} {m['p99_us']:>8} {m['errors']:>8} {cpu:>12.2f} {user:>9.2f} {classes}")
(s_rps, s_cpu), (b_rps, b_cpu) = med["stack"], med["bare"]
print(f"{path:<18} stack/bare = {s_rps / b_rps:.2f} req/s, {b_cpu / s_cpu:.2f} by server CPU per request")
if len(pairs) > 1:
    # Each stack run against the bare run right after it: how far one pair can stray from the
    # medians' ratio on a shared machine.
    ratios = sorted(s["requests_per_second"] / b["requests_per_second"] for s, b in pairs)
    print(f"{path:<18} pairs, stack/bare req/s: {' '.join(f'{r:.2f}' for r in ratios)}")
EOF2
done
