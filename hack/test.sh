#!/usr/bin/env bash
# Runs every test: unit tests and the end-to-end tests against the real test bed
# (a real kube-apiserver, registry and controller processes on loopback; for the tests in
# tests/e2e/tests/node*.rs also a real node: kubelet, containerd, runc; those need root).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
start=$(date +%s)
REGCRED_TESTBED_BIN=$(testbed_bin)
export REGCRED_TESTBED_BIN
# The install tests render the Helm chart.
REGCRED_HELM=${REGCRED_HELM:-$("$root/hack/helm.sh" | tail -n 1)}
export REGCRED_HELM
log "test bed binaries ready ($(( $(date +%s) - start ))s)"

start=$(date +%s)
cargo build --manifest-path "$root/Cargo.toml" --workspace --all-targets
REGCRED_BIN="$(target_dir)/debug/regcred"
# The kubectl plugin, run as a process by tests/e2e/tests/cli.rs.
REGCRED_CLI_BIN="$(target_dir)/debug/kubectl-regcred"
export REGCRED_BIN REGCRED_CLI_BIN
log "Rust build done ($(( $(date +%s) - start ))s)"

# The Argo CD health check and refresh action (Lua), on sample objects.
command -v lua5.4 >/dev/null || die "lua5.4 is not installed (Debian package lua5.4)"
lua5.4 "$root/config/argocd/component/test.lua"

# The alerts, checked and unit-tested by promtool (built from Prometheus' Go module,
# cached); the metrics e2e test lints a live scrape with it too.
REGCRED_PROMTOOL=${REGCRED_PROMTOOL:-$("$root/hack/promtool.sh" | tail -n 1)}
export REGCRED_PROMTOOL
"$REGCRED_PROMTOOL" check rules "$root/config/prometheus/alerts.yaml"
"$REGCRED_PROMTOOL" test rules "$root/config/prometheus/alerts.test.yaml"

start=$(date +%s)
cargo test --manifest-path "$root/Cargo.toml" --workspace "$@"
log "tests done ($(( $(date +%s) - start ))s)"
