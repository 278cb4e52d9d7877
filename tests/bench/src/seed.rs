//! The bed's contents: identities for the contenders, target namespaces, and ballast that
//! no contender manages (large Secrets, unrelated ServiceAccounts), so that caching what
//! is not managed shows in memory.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use regcred_testkit::TestBed;
use serde_json::json;

/// The label that picks a size's target namespaces: `regcred-bench/target=<targets>`.
pub(crate) const TARGET_LABEL: &str = "regcred-bench/target";
/// The label of the namespaces added while one contender runs: `regcred-bench/added=<run>`.
pub(crate) const ADDED_LABEL: &str = "regcred-bench/added";
/// Where the limit's and the script's identities live.
pub(crate) const BENCH_NAMESPACE: &str = "regcred-bench";
/// Requests in flight while seeding.
const SEED_CONCURRENCY: usize = 32;

/// What the limit and the script may do: exactly the reads and writes their job needs,
/// cluster-wide, like a patcher's ClusterRole.
const WRITER_RBAC: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: regcred-bench}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: limit, namespace: regcred-bench}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: script, namespace: regcred-bench}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: regcred-bench-writer}
rules:
  - apiGroups: [""]
    resources: [namespaces]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [secrets]
    verbs: [get, list, watch, create, update, patch]
  - apiGroups: [""]
    resources: [serviceaccounts]
    verbs: [get, list, watch, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: regcred-bench-writer}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: regcred-bench-writer}
subjects:
  - {kind: ServiceAccount, name: limit, namespace: regcred-bench}
  - {kind: ServiceAccount, name: script, namespace: regcred-bench}
"#;

/// Installs regcred (CRDs, RBAC, guardrails) and the identities of the other contenders.
pub(crate) fn identities(bed: &'static TestBed) {
    regcred_e2e::install(bed);
    let (ok, out) = regcred_e2e::kubectl_output(bed, &["apply", "-f", "-"], Some(WRITER_RBAC));
    assert!(ok, "the bench's RBAC: {out}");
}

/// Writes a kubeconfig for `namespace/name` (a fresh one-hour token) to `path`.
pub(crate) async fn kubeconfig(bed: &TestBed, namespace: &str, name: &str, path: &Path) {
    bed.service_account_kubeconfig(namespace, name, path).await;
}

/// Creates `count` namespaces `<targets>-NNNNN` labelled for `targets`, each with `extra`
/// ServiceAccounts besides the `default` one the controller manager adds.
pub(crate) async fn namespaces(
    client: &Client,
    targets: &str,
    range: std::ops::Range<usize>,
    extra: usize,
) -> Vec<String> {
    let names: Vec<String> = range.map(|i| format!("{targets}-{i:05}")).collect();
    let labels = json!({TARGET_LABEL: targets});
    futures::stream::iter(names.clone())
        .map(|name| create_namespace(client.clone(), labels.clone(), name, extra))
        .buffer_unordered(SEED_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    names
}

/// Creates the namespace `name` with `labels` and `extra` ServiceAccounts.
pub(crate) async fn create_namespace(
    client: Client,
    labels: serde_json::Value,
    name: String,
    extra: usize,
) {
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels}
    }))
    .expect("a Namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
    let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
    for i in 0..extra {
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": format!("app-{i}")}})).unwrap();
        accounts
            .create(&PostParams::default(), &sa)
            .await
            .unwrap_or_else(|e| panic!("{name}/app-{i}: {e}"));
    }
}

/// Takes a contender's work back, so that its next start is cold again: per namespace
/// (with its ServiceAccounts' names), the Secret `secret` deleted, and the ServiceAccounts'
/// `imagePullSecrets` and regcred's record of them removed (the seeded ones had neither).
pub(crate) async fn undo(client: &Client, secret: &str, namespaces: Vec<(String, Vec<String>)>) {
    let patch = json!({
        "metadata": {"annotations": {regcred_api::names::SA_ENTRIES_ANNOTATION: null}},
        "imagePullSecrets": null,
    });
    futures::stream::iter(namespaces)
        .map(|(namespace, accounts)| {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
            let patch = &patch;
            async move {
                match secrets.delete(secret, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => panic!("delete {namespace}/{secret}: {e}"),
                }
                for account in accounts {
                    service_accounts
                        .patch(&account, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .unwrap_or_else(|e| panic!("{namespace}/{account}: {e}"));
                }
            }
        })
        .buffer_unordered(SEED_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

/// Deletes the namespaces `selector` picks and waits until they are gone.
pub(crate) async fn delete_namespaces(client: &Client, selector: &str) -> Duration {
    let started = Instant::now();
    let api = Api::<Namespace>::all(client.clone());
    let selector = ListParams::default().labels(selector);
    let names: Vec<String> = api
        .list_metadata(&selector)
        .await
        .expect("list namespaces")
        .items
        .into_iter()
        .filter_map(|ns| ns.metadata.name)
        .collect();
    // The namespace controller deletes each namespace's contents first: allow for that.
    let patience = Duration::from_secs(900) + Duration::from_millis(500) * names.len() as u32;
    futures::stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move {
                let _ = api.delete(&name, &DeleteParams::background()).await;
            }
        })
        .buffer_unordered(SEED_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    loop {
        let left = api.list_metadata(&selector).await.expect("list namespaces");
        if left.items.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < patience,
            "{} namespaces ({}) still there after {} s",
            left.items.len(),
            selector.label_selector.as_deref().unwrap_or_default(),
            patience.as_secs()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Namespaces no contender targets, holding `secrets` Secrets of `kib` KiB each and
/// `accounts` ServiceAccounts, spread over 10 namespaces.
pub(crate) async fn ballast(client: &Client, secrets: usize, kib: usize, accounts: usize) {
    const NAMESPACES: usize = 10;
    for n in 0..NAMESPACES {
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": format!("bench-ballast-{n}")}
        }))
        .unwrap();
        let _ = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await;
    }
    // Incompressible-looking bytes: a cache holding these holds all of them.
    let payload: Vec<u8> = (0..kib * 1024)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    let secret_jobs = (0..secrets).map(|i| {
        let secrets: Api<Secret> =
            Api::namespaced(client.clone(), &format!("bench-ballast-{}", i % NAMESPACES));
        let data = ByteString(payload.clone());
        async move {
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(format!("ballast-{i}")),
                    ..Default::default()
                },
                data: Some([("blob".to_owned(), data)].into()),
                ..Default::default()
            };
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => panic!("ballast Secret {i}: {e}"),
            }
        }
    });
    futures::stream::iter(secret_jobs)
        .buffer_unordered(SEED_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let account_jobs = (0..accounts).map(|i| {
        let api: Api<ServiceAccount> =
            Api::namespaced(client.clone(), &format!("bench-ballast-{}", i % NAMESPACES));
        async move {
            let sa: ServiceAccount =
                serde_json::from_value(json!({"metadata": {"name": format!("unrelated-{i}")}}))
                    .unwrap();
            match api.create(&PostParams::default(), &sa).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => panic!("ballast ServiceAccount {i}: {e}"),
            }
        }
    });
    futures::stream::iter(account_jobs)
        .buffer_unordered(SEED_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}
