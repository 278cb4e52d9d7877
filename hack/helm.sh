#!/usr/bin/env bash
# Builds the Helm CLI from its Go module (helm.sh/helm/v3, through the Go module proxy:
# no other download site is needed) into a cache directory keyed by version, and reuses
# it when present. Prints the path of the helm binary on its last line.
set -euo pipefail
version=${HELM_VERSION:-v3.22.0}
cache=${REGCRED_CACHE_DIR:-$HOME/.cache/regcred}
dir="$cache/helm-$version"
log() { printf 'helm build: %s\n' "$*" >&2; }
command -v go >/dev/null || { log "error: go is not installed (needed to build helm)"; exit 1; }

if [ ! -x "$dir/helm" ]; then
  start=$(date +%s)
  log "building helm $version from helm.sh/helm/v3 (cold: a few minutes)"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  # `go install pkg@version` builds the module as released, outside any go.mod here.
  env -u GOFLAGS GOBIN="$dir.tmp" GOTOOLCHAIN="${GOTOOLCHAIN:-auto}" CGO_ENABLED=0 \
    go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
    "helm.sh/helm/v3/cmd/helm@$version"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  log "built helm $version in $(( $(date +%s) - start ))s"
fi
echo "$dir/helm"
