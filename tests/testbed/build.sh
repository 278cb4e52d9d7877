#!/usr/bin/env bash
# Builds the test bed's binaries (kube-apiserver, kube-controller-manager, kubectl, etcd and
# the testbed tool; for the node kubelet, kube-proxy, kube-scheduler, containerd, its runc
# shim, ctr and crictl) from the pinned Go modules into cache directories keyed by version, and
# the AWS emulator's Python venv (pinned PyPI packages, keyed by their list), and reuses them
# when present. Prints the directory holding the binaries (and the aws-emulator wrapper
# script) on its last line.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${REGCRED_CACHE_DIR:-$HOME/.cache/regcred}
k8s_version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$here/go.mod")
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' "$here/go.mod")

log() { printf 'testbed build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v go >/dev/null || die "go is not installed (needed to build the control plane)"
python=${REGCRED_PYTHON:-python3}
command -v "$python" >/dev/null || die "$python is not installed (needed for the AWS emulator; Debian package python3)"

# Kubernetes binaries depend only on the pinned versions: key them by those.
k8s_dir="$cache/k8s-$k8s_version-etcd-$etcd_version"
# The node's binaries: kubelet, kube-proxy and kube-scheduler from the same k8s module,
# containerd and crictl from their own module (node/go.mod), whose dependencies need not
# agree with Kubernetes'. A directory of its own keeps the control plane's cache valid.
containerd_version=$(awk '$1 == "github.com/containerd/containerd/v2" { print $2; exit }' "$here/node/go.mod")
crictl_version=$(awk '$1 == "sigs.k8s.io/cri-tools" { print $2; exit }' "$here/node/go.mod")
node_dir="$cache/node-$k8s_version-containerd-$containerd_version-crictl-$crictl_version"
node_binaries=(kubelet kube-proxy kube-scheduler containerd containerd-shim-runc-v2 ctr crictl)
# The testbed tool also depends on its own sources.
tool_key=$(cat "$here/go.mod" "$here/go.sum" $(find "$here/cmd" -name '*.go' | sort) | sha256sum | cut -c1-16)
tool_dir="$cache/testbed-$tool_key"
# The AWS emulator's venv depends on the pinned requirements and the Python version; its
# sources are copied next to it, keyed by their own hash, so that a wrapper in a shared bin
# directory never runs another checkout's emulator.
py_version=$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
venv_key=$( (cat "$here/aws/requirements.txt"; echo "python $py_version") | sha256sum | cut -c1-16)
venv_dir="$cache/aws-venv-$venv_key"
emu_key=$(cd "$here/aws" && find . -name '*.py' -not -path '*/__pycache__/*' | LC_ALL=C sort \
  | while read -r f; do echo "$f"; cat "$f"; done | sha256sum | cut -c1-16)
emu_dir="$cache/aws-emulator-$emu_key"

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

node_complete=true
for f in "${node_binaries[@]}"; do [ -x "$node_dir/$f" ] || node_complete=false; done
if ! $node_complete; then
  start=$(date +%s)
  minor=$(echo "$k8s_version" | cut -d. -f2)
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  log "building kubelet, kube-proxy and kube-scheduler $k8s_version, containerd $containerd_version and crictl $crictl_version"
  rm -rf "$node_dir.tmp" && mkdir -p "$node_dir.tmp"
  go build -ldflags "$ldflags" -o "$node_dir.tmp/" \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy \
    k8s.io/kubernetes/cmd/kube-scheduler
  # containerd's own version stamp, and no storage drivers that need C libraries.
  (cd "$here/node" && go mod download && go build -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version" \
    -o "$node_dir.tmp/" \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    github.com/containerd/containerd/v2/cmd/ctr \
    && go build -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$crictl_version" \
      -o "$node_dir.tmp/" sigs.k8s.io/cri-tools/cmd/crictl)
  rm -rf "$node_dir" && mv "$node_dir.tmp" "$node_dir"
  log "built the node's binaries in $(( $(date +%s) - start ))s"
fi

if [ ! -x "$tool_dir/testbed" ]; then
  start=$(date +%s)
  mkdir -p "$tool_dir"
  # The node's pause and test images are made from these at `up --node`: static, so that
  # they run in an image holding nothing else.
  CGO_ENABLED=0 go build -ldflags "-s -w" -o "$tool_dir/testbed-pause" ./cmd/pause
  CGO_ENABLED=0 go build -ldflags "-s -w" -o "$tool_dir/testbed-idle" ./cmd/idle
  go build -ldflags "-s -w" -o "$tool_dir/testbed.tmp" ./cmd/testbed
  mv "$tool_dir/testbed.tmp" "$tool_dir/testbed"
  log "built the testbed tool in $(( $(date +%s) - start ))s"
fi

# The venv is made in place (scripts in a venv name its path) and marked complete last.
if [ ! -e "$venv_dir/.complete" ]; then
  start=$(date +%s)
  "$python" -c 'import ensurepip, venv' 2>/dev/null \
    || die "$python cannot create a venv with pip: install the Debian package python3-venv"
  rm -rf "$venv_dir"
  log "creating the AWS emulator's venv (moto and friends from PyPI)"
  "$python" -m venv "$venv_dir"
  "$venv_dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$here/aws/requirements.txt" || die "pip install -r $here/aws/requirements.txt failed"
  touch "$venv_dir/.complete"
  log "created the AWS emulator's venv in $(( $(date +%s) - start ))s"
fi
if [ ! -e "$emu_dir/emulator.py" ]; then
  rm -rf "$emu_dir.tmp" && mkdir -p "$emu_dir.tmp"
  (cd "$here/aws" && find . -name '*.py' -not -path '*/__pycache__/*' \
    | while read -r f; do mkdir -p "$emu_dir.tmp/$(dirname "$f")" && cp "$f" "$emu_dir.tmp/$f"; done)
  # Compiled now, so that the first start does not pay for it.
  "$venv_dir/bin/python" -m compileall -q "$emu_dir.tmp" >/dev/null
  rm -rf "$emu_dir" && mv "$emu_dir.tmp" "$emu_dir"
fi

# One directory with every binary, so callers need a single path.
bin_key=$(echo "$tool_key $venv_key $emu_key $(basename "$node_dir")" | sha256sum | cut -c1-16)
bin="$cache/bin-$k8s_version-$bin_key"
if [ ! -d "$bin" ]; then
  rm -rf "$bin.tmp" && mkdir -p "$bin.tmp"
  for f in kube-apiserver kube-controller-manager kubectl etcd; do ln -sf "$k8s_dir/$f" "$bin.tmp/$f"; done
  ln -sf "$tool_dir/testbed" "$bin.tmp/testbed"
  for f in testbed-pause testbed-idle; do ln -sf "$tool_dir/$f" "$bin.tmp/$f"; done
  for f in "${node_binaries[@]}"; do ln -sf "$node_dir/$f" "$bin.tmp/$f"; done
  {
    echo '#!/bin/sh'
    echo '# The regcred test bed'"'"'s AWS emulator (tests/testbed/aws), written by tests/testbed/build.sh.'
    printf 'exec %q %q "$@"\n' "$venv_dir/bin/python" "$emu_dir/emulator.py"
  } >"$bin.tmp/aws-emulator"
  chmod 755 "$bin.tmp/aws-emulator"
  rm -rf "$bin" && mv "$bin.tmp" "$bin"
fi
echo "$bin"
