#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/ for a bounded time, one after the other, and print a
# line per target: executions, coverage reached, and the crash file if one was found.
#   FUZZ_SECONDS=N   seconds per target (default 30)
#   FUZZ_RUNS=N      stop a target after N executions instead (e.g. 1000000 by hand)
#   FUZZ_TARGETS="a b"  only these targets
# Built without a sanitizer (-s none): AddressSanitizer needs nightly's -Zsanitizer, and the
# host is safe Rust whose bugs are panics and broken properties, which libFuzzer catches
# as crashes either way. Debug assertions (overflow checks) are on.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "error: cargo-fuzz is not installed: cargo install cargo-fuzz --locked (.ci/run does it)"
  exit 1
fi
seconds="${FUZZ_SECONDS:-30}"
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
limit=(-max_total_time="$seconds")
[ -n "${FUZZ_RUNS:-}" ] && limit=(-runs="$FUZZ_RUNS")

mkdir -p target
cargo fuzz build -s none >target/fuzz-build.log 2>&1 || { tail -30 target/fuzz-build.log; exit 1; }
failed=()
for target in $targets; do
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  log="target/fuzz-$target.log"
  cargo fuzz run -s none "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    "${limit[@]}" -print_final_stats=1 >"$log" 2>&1
  status=$?
  runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
  if [ "$status" -eq 0 ]; then
    printf 'fuzz %-13s ok      %10s executions  %s\n' "$target" "${runs:-?}" "$cov"
  else
    crash=$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -1 | sed 's/Test unit written to //')
    printf 'fuzz %-13s FAILED  %10s executions  %s  %s\n' "$target" "${runs:-?}" "$cov" "${crash:-}"
    grep -E 'panicked at|^thread' -A4 "$log" | head -20
    [ -n "$crash" ] && echo "  replay: cargo fuzz run -s none $target $crash"
    failed+=("$target")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "error: fuzz targets failed: ${failed[*]} (logs in target/fuzz-TARGET.log)"
  exit 1
fi
