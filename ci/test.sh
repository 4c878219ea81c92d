#!/usr/bin/env bash
# The one entry point CI systems call: formatting, lints for host and guest, then every test.
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
