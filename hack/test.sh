#!/usr/bin/env bash
# Runs every test: unit tests and the end-to-end tests against the real test bed
# (a real kube-apiserver, registry and controller processes on loopback).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start=$(date +%s)
REGCRED_TESTBED_BIN=$(testbed_bin)
export REGCRED_TESTBED_BIN
log "test bed binaries ready ($(( $(date +%s) - start ))s)"

start=$(date +%s)
cargo build --manifest-path "$root/Cargo.toml" --workspace --all-targets
REGCRED_BIN="$(target_dir)/debug/regcred"
export REGCRED_BIN
log "Rust build done ($(( $(date +%s) - start ))s)"

start=$(date +%s)
cargo test --manifest-path "$root/Cargo.toml" --workspace "$@"
log "tests done ($(( $(date +%s) - start ))s)"
