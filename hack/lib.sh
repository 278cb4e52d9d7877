# Shared by hack/*.sh: locate the tools and build what they need, reusing caches.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

for tool in go cargo docker-registry skopeo umoci; do
  command -v "$tool" >/dev/null || die "$tool is not installed (see .ci/run for what to install)"
done

# The test bed's binaries (Kubernetes, etcd, the testbed tool), cached by version.
testbed_bin() {
  "$root/tests/testbed/build.sh" | tail -n 1
}

# Where cargo puts binaries (honours CARGO_TARGET_DIR).
target_dir() {
  cargo metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'
}
