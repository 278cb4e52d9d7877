#!/usr/bin/env bash
# Starts a real local Kubernetes control plane and registry (tests/testbed), installs
# regcred's CRDs and RBAC, runs the controller under its own ServiceAccount, and applies
# config/samples pointed at the local registry. Stop with Ctrl-C: everything goes down.
#
#   hack/run-local.sh            # runs until Ctrl-C
#   hack/run-local.sh --check    # stops once the sample is Ready and the pull check passes
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
check_only=false
[ "${1:-}" = "--check" ] && check_only=true

bin=$(testbed_bin)
log "building regcred"
cargo build --quiet --manifest-path "$root/Cargo.toml" -p regcred
regcred="$(target_dir)/debug/regcred"

state="$root/.testbed"
rm -rf "$state/bed" && mkdir -p "$state"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting the test bed (etcd, kube-apiserver, kube-controller-manager, registry)"
# --lifeline: if this script dies, its end of the pipe closes and the bed goes down.
coproc BED { exec "$bin/testbed" up --dir "$state/bed" --bin "$bin" --lifeline 2>"$state/testbed.log"; }
pids+=("$BED_PID")
read -r ready info <&"${BED[0]}" || die "the test bed did not start; see $state/testbed.log"
[ "$ready" = ready ] || die "unexpected test bed output: $ready"
export KUBECONFIG="$state/bed/kubeconfig"
kubectl="$bin/kubectl"
registry=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["registry"]["host"])' "$info")
read -r user password < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["registry"]; print(r["username"], r["password"])' "$info")

log "installing CRDs and RBAC"
"$kubectl" apply --server-side -f "$root/crds/regcred.io_crds.yaml" >/dev/null
"$kubectl" wait --for=condition=Established crd --all --timeout=30s >/dev/null
"$kubectl" apply -f "$root/config/manager/namespace.yaml" >/dev/null
"$kubectl" apply -k "$root/config/rbac" >/dev/null
"$kubectl" apply -k "$root/config/policy" >/dev/null

log "starting the controller as system:serviceaccount:regcred-system:regcred"
token=$("$kubectl" -n regcred-system create token regcred --duration=24h)
controller_kubeconfig="$state/regcred.kubeconfig"
cp "$KUBECONFIG" "$controller_kubeconfig"
KUBECONFIG="$controller_kubeconfig" "$kubectl" config set-credentials regcred --token="$token" >/dev/null
KUBECONFIG="$controller_kubeconfig" "$kubectl" config set-context --current --user=regcred >/dev/null
# AWS calls go to the bed's emulator, never to AWS or to an instance metadata service.
aws_endpoint=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["aws"]["endpoint"])' "$info")
# Probes and metrics on free loopback ports (the log says which), not 8080/8081 on every
# interface of a workstation.
KUBECONFIG="$controller_kubeconfig" AWS_ENDPOINT_URL="$aws_endpoint" AWS_REGION=eu-west-1 \
  AWS_EC2_METADATA_DISABLED=true REGCRED_PROBE_ADDR="${REGCRED_PROBE_ADDR:-127.0.0.1:0}" \
  REGCRED_METRICS_ADDR="${REGCRED_METRICS_ADDR:-127.0.0.1:0}" \
  "$regcred" run >"$state/regcred.log" 2>&1 &
pids+=("$!")

log "applying config/samples against the local registry $registry"
# The samples carry placeholders for the registry and its login: fill in the local ones.
"$kubectl" kustomize "$root/config/samples" \
  | sed -e "s/127\.0\.0\.1:5000/$registry/" -e "s/username: demo$/username: $user/" \
        -e "s/password: change-me$/password: $password/" \
  | "$kubectl" apply -f - >/dev/null
"$kubectl" -n regcred-demo wait registrycredential/demo-registry --for=condition=Ready --timeout=60s >/dev/null \
  || die "the sample did not become Ready; see $state/regcred.log"
"$kubectl" get registrycredentials -A
"$kubectl" -n regcred-demo get secret demo-registry -o json >"$state/demo-secret.json"
"$bin/testbed" pullcheck --secret "$state/demo-secret.json" --image "$registry/regcred/hello:1" \
  --cert-dir "$state/bed/registry-ca"
rm -f "$state/demo-secret.json"

if $check_only; then
  log "local environment works"
  exit 0
fi
cat >&2 <<MSG

The local environment is up. In another shell:
  export KUBECONFIG=$KUBECONFIG PATH=$bin:\$PATH
  kubectl get registrycredentials -A
Controller log: $state/regcred.log    Test bed log: $state/testbed.log
Press Ctrl-C to stop everything.
MSG
wait "${pids[0]}"
