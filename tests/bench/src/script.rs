//! The script way: what docs/migrate-from-scripts.md shows people running today, as a
//! platform team would write it to also replace a rotated password: for every target
//! namespace, create-or-replace the pull Secret with `kubectl apply`, then patch every
//! ServiceAccount. Run once, and run again for new namespaces or a new password.

/// Run with `KUBECTL`, `KUBECONFIG`, `SELECTOR`, `SECRET`, `SERVER`, `SOURCE_NAMESPACE`
/// and `SOURCE` set. The login is read from the source Secret, never printed.
pub(crate) const SCRIPT: &str = r#"set -euo pipefail
k() { "$KUBECTL" "$@"; }
user=$(k -n "$SOURCE_NAMESPACE" get secret "$SOURCE" -o jsonpath='{.data.username}' | base64 -d)
password=$(k -n "$SOURCE_NAMESPACE" get secret "$SOURCE" -o jsonpath='{.data.password}' | base64 -d)
for ns in $(k get namespaces -l "$SELECTOR" -o jsonpath='{.items[*].metadata.name}'); do
  k -n "$ns" create secret docker-registry "$SECRET" --docker-server="$SERVER" \
    --docker-username="$user" --docker-password="$password" --dry-run=client -o yaml \
    | k apply -f - >/dev/null
  for sa in $(k -n "$ns" get serviceaccounts -o jsonpath='{.items[*].metadata.name}'); do
    k -n "$ns" patch serviceaccount "$sa" -p "{\"imagePullSecrets\": [{\"name\": \"$SECRET\"}]}" >/dev/null
  done
done
"#;
