#!/usr/bin/env bash
# Builds promtool from Prometheus' Go module (github.com/prometheus/prometheus, through the
# Go module proxy) into a cache directory keyed by version, and reuses it when present.
# Prints the path of the promtool binary on its last line.
set -euo pipefail
version=${PROMETHEUS_MODULE_VERSION:-v0.316.0}
cache=${REGCRED_CACHE_DIR:-$HOME/.cache/regcred}
# Without the service discoveries (build tag remove_all_sd): checking and testing rules
# needs none, and they are most of the build.
dir="$cache/promtool-$version-nosd"
log() { printf 'promtool build: %s\n' "$*" >&2; }
command -v go >/dev/null || { log "error: go is not installed (needed to build promtool)"; exit 1; }

if [ ! -x "$dir/promtool" ]; then
  start=$(date +%s)
  log "building promtool from github.com/prometheus/prometheus $version (cold: a few minutes)"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  env -u GOFLAGS GOBIN="$dir.tmp" GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" CGO_ENABLED=0 \
    go install -trimpath -tags remove_all_sd -ldflags "-s -w" \
    "github.com/prometheus/prometheus/cmd/promtool@$version"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  log "built promtool in $(( $(date +%s) - start ))s"
fi
echo "$dir/promtool"
