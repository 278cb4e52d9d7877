#!/usr/bin/env bash
# Builds the test bed's binaries (kube-apiserver, kube-controller-manager, kubectl, etcd and
# the testbed tool) from the pinned Go modules into a cache directory keyed by version, and
# reuses them when present. Prints the directory holding the binaries on its last line.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${REGCRED_CACHE_DIR:-$HOME/.cache/regcred}
k8s_version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$here/go.mod")
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' "$here/go.mod")

log() { printf 'testbed build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v go >/dev/null || die "go is not installed (needed to build the control plane)"

# Kubernetes binaries depend only on the pinned versions: key them by those.
k8s_dir="$cache/k8s-$k8s_version-etcd-$etcd_version"
# The testbed tool also depends on its own sources.
tool_key=$(cat "$here/go.mod" "$here/go.sum" $(find "$here/cmd" -name '*.go' | sort) | sha256sum | cut -c1-16)
tool_dir="$cache/testbed-$tool_key"

export GOFLAGS="${GOFLAGS:-} -mod=mod -trimpath"
cd "$here"

if [ ! -x "$k8s_dir/kube-apiserver" ] || [ ! -x "$k8s_dir/kube-controller-manager" ] \
  || [ ! -x "$k8s_dir/kubectl" ] || [ ! -x "$k8s_dir/etcd" ]; then
  start=$(date +%s)
  minor=$(echo "$k8s_version" | cut -d. -f2)
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  log "downloading Go modules for Kubernetes $k8s_version and etcd $etcd_version"
  go mod download
  log "building kube-apiserver, kube-controller-manager, kubectl and etcd (cold: takes a while)"
  mkdir -p "$k8s_dir.tmp"
  go build -ldflags "$ldflags" -o "$k8s_dir.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl
  go build -ldflags "-s -w" -o "$k8s_dir.tmp/etcd" ./cmd/etcd
  rm -rf "$k8s_dir" && mv "$k8s_dir.tmp" "$k8s_dir"
  log "built Kubernetes binaries in $(( $(date +%s) - start ))s"
fi

if [ ! -x "$tool_dir/testbed" ]; then
  start=$(date +%s)
  mkdir -p "$tool_dir"
  go build -ldflags "-s -w" -o "$tool_dir/testbed.tmp" ./cmd/testbed
  mv "$tool_dir/testbed.tmp" "$tool_dir/testbed"
  log "built the testbed tool in $(( $(date +%s) - start ))s"
fi

# One directory with every binary, so callers need a single path.
bin="$cache/bin-$k8s_version-$tool_key"
if [ ! -d "$bin" ]; then
  mkdir -p "$bin.tmp"
  for f in kube-apiserver kube-controller-manager kubectl etcd; do ln -sf "$k8s_dir/$f" "$bin.tmp/$f"; done
  ln -sf "$tool_dir/testbed" "$bin.tmp/testbed"
  rm -rf "$bin" && mv "$bin.tmp" "$bin"
fi
echo "$bin"
