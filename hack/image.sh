#!/usr/bin/env bash
# Builds regcred's container image without a Docker engine: a release build, then a
# one-layer OCI image made with umoci, optionally pushed with skopeo. CI and a release
# pipeline run this; the Dockerfile beside it produces the same layout for Docker users.
#
#   hack/image.sh [--tag TAG] [--layout DIR] [--push REF] [skopeo --dest-* options]
#   hack/image.sh --rootfs DIR     only build and assemble the root filesystem in DIR
#                                  (what the Dockerfile runs; needs no umoci or skopeo)
#
#   --tag TAG          tag inside the OCI layout (default: v<crate version>)
#   --layout DIR       OCI layout directory (default: <cargo target dir>/image/oci)
#   --push REF         also copy the image to docker://REF, e.g.
#                      --push ghcr.io/regcred/regcred:v0.1.0
#   --dest-creds U:P, --dest-cert-dir DIR, --dest-authfile FILE, --dest-tls-verify=BOOL
#                      passed to `skopeo copy` as they are
#
# The image holds, and nothing else:
#   /usr/local/bin/regcred                 the stripped release binary
#   /etc/ssl/certs/ca-certificates.crt     Debian's ca-certificates (AWS and registry TLS)
#   /lib/x86_64-linux-gnu/, /lib64/        the C runtime the binary links (Debian's libc6,
#                                          libgcc-s1), found with ldd
# It runs as uid/gid 65532 with entrypoint `regcred` and command `run`; it needs no
# writable path, so the Pod can mount its root filesystem read-only.
# The last line printed is the image as skopeo names it: oci:<layout>:<tag>.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

version=$(awk -F'"' '/^version = / { print $2; exit }' "$root/Cargo.toml")
tag="v$version"
layout=""
push=""
rootfs_only=""
skopeo_dest=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --layout) layout=$2; shift 2 ;;
    --push) push=$2; shift 2 ;;
    --rootfs) rootfs_only=$2; shift 2 ;;
    --dest-creds|--dest-cert-dir|--dest-authfile) skopeo_dest+=("$1" "$2"); shift 2 ;;
    --dest-tls-verify=*) skopeo_dest+=("$1"); shift ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

tools=(cargo objcopy readelf ldd)
[ -n "$rootfs_only" ] || tools+=(umoci skopeo python3)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || die "$tool is not installed (Debian: umoci, skopeo, binutils)"
done
target=${CARGO_TARGET_DIR:-$root/target}
layout=${layout:-$target/image/oci}
# Outside git (a source tarball) the commit comes from the environment, if set.
if [ -z "${REGCRED_GIT_COMMIT:-}" ] && ! git -C "$root" rev-parse HEAD >/dev/null 2>&1; then
  log "not a git checkout and REGCRED_GIT_COMMIT unset: --version will say commit unknown"
fi

# Run from a test, cargo's per-package variables are set, and some build scripts (ring)
# rebuild when they change: that would throw the cached release build away each time.
for v in $(compgen -e); do
  case $v in
    CARGO_PKG_*|CARGO_MANIFEST_*|CARGO_CRATE_NAME|CARGO_BIN_NAME|CARGO_PRIMARY_PACKAGE|CARGO_TARGET_TMPDIR|OUT_DIR) unset "$v" ;;
  esac
done
start=$(date +%s)
cargo build --release --locked -p regcred --manifest-path "$root/Cargo.toml"
log "release build: $(( $(date +%s) - start ))s"
binary="$target/release/regcred"

work=$(mktemp -d "${TMPDIR:-/tmp}/regcred-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=${rootfs_only:-$work/rootfs}
[ ! -e "$rootfs" ] || [ -z "$(ls -A "$rootfs")" ] || die "$rootfs is not empty"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs"
objcopy --strip-all "$binary" "$rootfs/usr/local/bin/regcred"
chmod 755 "$rootfs/usr/local/bin/regcred"

# The bundle Debian's ca-certificates ships, without what this host added locally.
ca_dir=/usr/share/ca-certificates/mozilla
[ -d "$ca_dir" ] || die "$ca_dir is missing: install the Debian package ca-certificates"
cat "$ca_dir"/*.crt >"$rootfs/etc/ssl/certs/ca-certificates.crt"
chmod 644 "$rootfs/etc/ssl/certs/ca-certificates.crt"

# The shared libraries the binary links, and the loader its ELF header names.
interp=$(readelf -l "$binary" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
[ -n "$interp" ] || die "no program interpreter in $binary"
libs=$(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }')
mkdir -p "$rootfs/lib/x86_64-linux-gnu"
for lib in $libs; do
  cp -L "$lib" "$rootfs/lib/x86_64-linux-gnu/$(basename "$lib")"
done
cp -L "$interp" "$rootfs/lib/x86_64-linux-gnu/$(basename "$interp")"
mkdir -p "$rootfs$(dirname "$interp")"
if [ "$(dirname "$interp")" != /lib/x86_64-linux-gnu ]; then
  ln -s "/lib/x86_64-linux-gnu/$(basename "$interp")" "$rootfs$interp"
fi
# dpkg knows a file by the path its package installed (merged /usr: /lib/..., not /usr/lib/...).
packages=$(for f in $libs "$interp"; do
  { dpkg -S "$f" 2>/dev/null || dpkg -S "$(readlink -f "$f")" 2>/dev/null || true; } | cut -d: -f1
done | sort -u | tr '\n' ' ')
log "C runtime from Debian packages: ${packages:-unknown}"

# The image must run from its own files alone, as uid 65532 (chroot needs root; without
# it, its own loader and libraries at least).
if [ "$(id -u)" = 0 ]; then
  chroot --userspec=65532:65532 "$rootfs" /usr/local/bin/regcred --version >"$work/version" \
    || die "the image's binary does not run inside its own root filesystem"
else
  "$rootfs/lib/x86_64-linux-gnu/$(basename "$interp")" --inhibit-cache \
    --library-path "$rootfs/lib/x86_64-linux-gnu" "$rootfs/usr/local/bin/regcred" --version \
    >"$work/version" || die "the image's binary does not run with the image's libraries"
fi
log "inside the image: $(cat "$work/version")"
if [ -n "$rootfs_only" ]; then
  log "root filesystem in $rootfs ($(( $(du -sb "$rootfs" | cut -f1) / 1024 )) KiB)"
  exit 0
fi

commit=$(awk '{ gsub(/[()]/, ""); print $NF }' "$work/version")
rm -rf "$layout"
mkdir -p "$(dirname "$layout")"
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
# The layer is made with GNU tar, reproducibly (sorted, root-owned, one timestamp), and
# added verbatim: umoci 0.4.7's `insert` of a directory ends the tar stream early (the
# last file is cut short and the end-of-archive blocks are missing).
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}
(cd "$rootfs" && LC_ALL=C tar --create --file "$work/layer.tar" --sort=name \
  --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
  --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  etc lib lib64 usr)
umoci raw add-layer --image "$layout:$tag" --history.created_by "hack/image.sh" "$work/layer.tar"
# MIMALLOC_PURGE_DELAY=0: the allocator hands freed pages back at once rather than after
# 10 ms; at 5,000 namespaces that is 5 MiB less peak RSS (docs/benchmarks.md, memory).
umoci config --image "$layout:$tag" \
  --os linux --architecture amd64 \
  --config.env MIMALLOC_PURGE_DELAY=0 \
  --config.user 65532:65532 \
  --config.entrypoint /usr/local/bin/regcred --config.cmd run \
  --config.workingdir / \
  --config.exposedports 8080/tcp --config.exposedports 8081/tcp \
  --config.label "org.opencontainers.image.title=regcred" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.revision=$commit" \
  --config.label "org.opencontainers.image.source=https://github.com/regcred/regcred" \
  --config.label "org.opencontainers.image.licenses=Apache-2.0" \
  --history.created_by "hack/image.sh: user, entrypoint, environment, labels"

# Size as a registry stores it (compressed layer + config) and as unpacked on a node.
manifest=$(python3 - "$layout" "$tag" <<'EOF'
import json, sys
layout, tag = sys.argv[1], sys.argv[2]
index = json.load(open(f"{layout}/index.json"))
m = next(m for m in index["manifests"]
         if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
manifest = json.load(open(f"{layout}/blobs/{m['digest'].replace(':', '/')}"))
size = sum(l["size"] for l in manifest["layers"]) + manifest["config"]["size"]
print(m["digest"], size)
EOF
)
read -r digest compressed <<<"$manifest"
unpacked=$(du -sb "$rootfs" | cut -f1)
log "image oci:$layout:$tag ($digest)"
log "image size: $(( compressed / 1024 )) KiB compressed, $(( unpacked / 1024 )) KiB unpacked"

if [ -n "$push" ]; then
  # skopeo checks the source against a signature policy; the source is the image just
  # built here, so a host without one gets an accept-anything policy for this copy.
  policy=()
  if [ ! -e /etc/containers/policy.json ] && [ ! -e "$HOME/.config/containers/policy.json" ]; then
    echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$work/policy.json"
    policy=(--policy "$work/policy.json")
  fi
  skopeo "${policy[@]}" copy --quiet "${skopeo_dest[@]}" "oci:$layout:$tag" "docker://$push"
  log "pushed docker://$push"
fi
echo "oci:$layout:$tag"
