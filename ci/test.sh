#!/usr/bin/env bash
# The one entry point CI systems call: formatting, lints for host and guest, every test, then
# the scenario suite with a JUnit report (target/junit.xml).
# KVM tests print SKIPPED (and pass) where /dev/kvm is unusable; the QEMU oracle likewise
# without qemu-system-x86_64. Under CI=true a skip fails the run unless VMM_ALLOW_SKIP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# A test that cannot run prints SKIPPED and appends that line to this file (cargo hides what
# passing tests print); the count and the reasons are printed at the end, however the run ends.
export VMM_SKIP_LOG="${VMM_SKIP_LOG:-$PWD/target/skipped-tests.txt}"
mkdir -p "$(dirname "$VMM_SKIP_LOG")"
: > "$VMM_SKIP_LOG"
report_skips() {
  local count
  count=$(grep -c '^SKIPPED' "$VMM_SKIP_LOG" 2>/dev/null || true)
  printf '\n== skipped tests: %s\n' "${count:-0}"
  if [ "${count:-0}" -gt 0 ]; then
    sed 's/^SKIPPED /  /' "$VMM_SKIP_LOG" | sort | uniq -c | sed 's/^ *\([0-9]*\) /  \1x /'
  fi
}
trap report_skips EXIT

# Under CI=true nothing may be skipped unless VMM_ALLOW_SKIP=1 says so: a KVM runner that lost
# /dev/kvm, or a job without QEMU, gdb, Chromium, GRUB's grub-file, lz4 or cargo-fuzz, must fail rather than
# test nothing.
if [ "${CI:-}" = "true" ] && [ "${VMM_ALLOW_SKIP:-}" != "1" ]; then
  absent=()
  { [ -r /dev/kvm ] && [ -w /dev/kvm ]; } || absent+=("/dev/kvm (missing or not readable and writable)")
  command -v qemu-system-x86_64 >/dev/null 2>&1 || absent+=("qemu-system-x86_64")
  command -v gdb >/dev/null 2>&1 || absent+=("gdb")
  command -v chromium >/dev/null 2>&1 || absent+=("chromium")
  command -v grub-file >/dev/null 2>&1 || absent+=("grub-file")
  command -v lz4 >/dev/null 2>&1 || absent+=("lz4")
  cargo fuzz --version >/dev/null 2>&1 || absent+=("cargo-fuzz")
  if [ "${#absent[@]}" -gt 0 ]; then
    joined=$(printf '%s, ' "${absent[@]}")
    echo "error: CI=true but this machine lacks ${joined%, }: the tests that need them would be skipped; run .ci/run (it installs the packages), use a runner with KVM, or set VMM_ALLOW_SKIP=1 to allow skipping"
    exit 1
  fi
fi

step "cargo fmt --check (host workspace and guest-kernel)"
cargo fmt --all -- --check
(cd guest-kernel && cargo fmt -- --check)
(cd fuzz && cargo fmt -- --check)

step "cargo clippy -D warnings (host workspace, all targets)"
cargo clippy --locked --all-targets -- -D warnings

step "cargo clippy -D warnings (the fuzz targets' bodies: vmm-host --features fuzzing)"
cargo clippy --locked -p vmm-host --features fuzzing --lib -- -D warnings

step "cargo clippy -D warnings (guest-kernel, x86_64-unknown-none)"
(cd guest-kernel && cargo clippy --locked --release -- -D warnings)

step "cargo test (workspace)"
cargo test --locked --workspace

# Every scenario of the catalogue, as a regression suite with a JUnit report for CI.
step "fuzzing, bounded: property tests and the gdb stub fuzzer, longer than cargo test runs them"
PROPTEST_CASES=20000 cargo test --locked -q -p vmm-host --lib -- robustness walk_model
GDB_FUZZ_PACKETS=10000 GDB_FUZZ_SEED="${GDB_FUZZ_SEED:-2}" \
  cargo test --locked -q -p vmm-host --test gdb_fuzz -- --nocapture

step "cargo-fuzz targets, ${FUZZ_SECONDS:-30} s each (ci/fuzz.sh; docs/fuzzing.md)"
if cargo fuzz --version >/dev/null 2>&1; then
  FUZZ_SECONDS="${FUZZ_SECONDS:-30}" bash ci/fuzz.sh
else
  echo "SKIPPED cargo-fuzz targets: cargo-fuzz is not installed (.ci/run installs it)" | tee -a "$VMM_SKIP_LOG"
fi

step "scenario suite (JUnit report: target/junit.xml)"
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
  # A failing scenario leaves its core, report and HTML page in target/scenario-artifacts.
  cargo run --locked -q -p vmm-host -- scenario --all --jobs 2 --junit target/junit.xml --json target/scenarios.json \
    --artifacts target/scenario-artifacts \
    | tee target/scenario-suite.log
  # A scenario that needs what this KVM cannot do (`needs`, measured like `doctor`) is skipped
  # by the suite, not failed: it is listed with the skipped tests at the end.
  sed -nE 's/^\[ *[0-9]+\/[0-9]+\] SKIP +([^ ]+)  \((.*)\)$/SKIPPED scenario \1: \2/p' \
    target/scenario-suite.log >> "$VMM_SKIP_LOG"
else
  echo "SKIPPED scenario suite: /dev/kvm is missing or not readable and writable" | tee -a "$VMM_SKIP_LOG"
fi
