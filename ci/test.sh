#!/usr/bin/env bash
# The one entry point CI systems call: formatting, lints for host and guest, every test, then
# the scenario suite with a JUnit report (target/junit.xml).
# KVM tests print SKIPPED (and pass) where /dev/kvm is unusable; the QEMU oracle likewise
# without qemu-system-x86_64.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check (host workspace and guest-kernel)"
cargo fmt --all -- --check
(cd guest-kernel && cargo fmt -- --check)

step "cargo clippy -D warnings (host workspace, all targets)"
cargo clippy --locked --all-targets -- -D warnings

step "cargo clippy -D warnings (guest-kernel, x86_64-unknown-none)"
(cd guest-kernel && cargo clippy --locked --release -- -D warnings)

step "cargo test (workspace)"
cargo test --locked --workspace

# Every scenario of the catalogue, as a regression suite with a JUnit report for CI.
step "fuzzing, bounded: property tests and the gdb stub fuzzer, longer than cargo test runs them"
PROPTEST_CASES=20000 cargo test --locked -q -p vmm-host --lib robustness
GDB_FUZZ_PACKETS=10000 GDB_FUZZ_SEED="${GDB_FUZZ_SEED:-2}" \
  cargo test --locked -q -p vmm-host --test gdb_fuzz -- --nocapture

step "scenario suite (JUnit report: target/junit.xml)"
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
  cargo run --locked -q -p vmm-host -- scenario --all --jobs 2 --junit target/junit.xml --json target/scenarios.json
else
  echo "SKIPPED scenario suite: /dev/kvm is missing or not readable and writable"
fi
