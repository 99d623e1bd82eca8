#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) and prints one line per target: its runs,
# seconds, and crashes. Exits non-zero if any target crashed; the crashing input is left in
# fuzz/artifacts/TARGET/ (replay it with `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET FILE`), and the
# full output in target/fuzz-logs/TARGET.log.
#
#   fuzz/run.sh            # 60 s per target
#   fuzz/run.sh 600        # the 10-minute runs RELIABILITY.md records
#   TARGETS="cache_policy" fuzz/run.sh 30
#
# Each target reads its seeds from fuzz/seeds/TARGET (committed) and keeps what it finds in
# fuzz/corpus/TARGET (not committed). Stable Rust: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the
# nightly-only sanitizer flags.
set -uo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
seconds="${1:-60}"
targets="${TARGETS:-$(cargo fuzz list)}"
cargo fuzz build >/dev/null 2>&1 || cargo fuzz build || exit 1
mkdir -p target/fuzz-logs
failed=0
printf '%-20s %12s %8s %8s\n' target runs seconds crashes
for t in $targets; do
  mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
  log="target/fuzz-logs/$t.log"
  start=$(date +%s)
  mkdir -p "fuzz/artifacts/$t"
  # The binary `cargo fuzz run` would start, started directly: a run keeps the build it began
  # with even if the sources change meanwhile.
  "fuzz/target/x86_64-unknown-linux-gnu/release/$t" -artifact_prefix="fuzz/artifacts/$t/" \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    "fuzz/corpus/$t" "fuzz/seeds/$t" >"$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
  crashes=0
  if [ "$rc" -ne 0 ]; then
    crashes=1
    failed=1
  fi
  printf '%-20s %12s %8s %8s\n' "$t" "${runs:-?}" "$took" "$crashes"
  if [ "$rc" -ne 0 ]; then
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -5 | sed 's/^/    /'
  fi
done
exit "$failed"
