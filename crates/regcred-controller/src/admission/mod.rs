//! The mutating admission webhook: a ServiceAccount (or, in Pod mode, a Pod) is born with
//! the pull Secret its credentials give it, so the first Pod after `helm install` pulls.
//!
//! A ServiceAccount's `imagePullSecrets` reach a Pod only when the Pod is created; the
//! watch path patches a new ServiceAccount a moment after it exists, and Pods admitted in
//! between keep an empty list for ever. Admission closes that gap:
//!
//! - **ServiceAccount mode** (the default): on CREATE, the ServiceAccount gets exactly the
//!   list and the `regcred.io/image-pull-secrets` record the watch path would give it:
//!   both call [`crate::service_accounts::plan_for`]. Admission may also point at a
//!   Secret the leader is about to write (a brand-new namespace): Pods then name it from
//!   their first second, and kubelet finds it on its first pull or its next retry.
//! - **Pod mode**, for clusters where ServiceAccounts must not be touched: on CREATE, a Pod
//!   that lists no `imagePullSecrets` of its own (none, or exactly its ServiceAccount's)
//!   gets its ServiceAccount's planned list, and the watch path patches no ServiceAccount.
//!
//! Every decision comes from the controller's caches: no API request is made while the API
//! server waits. Every replica serves (reading needs no lease); the webhook is registered
//! with `failurePolicy: Ignore`, so a webhook that is down never blocks a create, and the
//! watch path repairs ServiceAccounts afterwards.

pub(crate) mod review;
pub(crate) mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::runtime::reflector::ObjectRef;
use regcred_api::names::SA_ENTRIES_ANNOTATION;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::cached_account::CachedServiceAccount;
use crate::context::Stores;
use crate::service_accounts::{self, Pointing};
use crate::webhook_tls::{self, CertResolver, WebhookTlsSettings};

/// What the webhook mutates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdmissionMode {
    /// ServiceAccounts on CREATE (their Pods copy the list).
    ServiceAccounts,
    /// Pods on CREATE (ServiceAccounts are left alone).
    Pods,
}

impl AdmissionMode {
    /// The URL path the API server posts reviews to.
    pub(crate) fn path(self) -> &'static str {
        match self {
            AdmissionMode::ServiceAccounts => "/mutate/serviceaccounts",
            AdmissionMode::Pods => "/mutate/pods",
        }
    }
}

/// The webhook: what it mutates, where it listens, how its certificate is kept.
#[derive(Clone, Debug)]
pub struct AdmissionSettings {
    pub mode: AdmissionMode,
    pub addr: SocketAddr,
    pub tls: WebhookTlsSettings,
}

/// Binds the webhook's port and starts serving and keeping its certificate. The receiver
/// turns true once a certificate is served (readiness waits for it).
pub(crate) async fn start(
    client: kube::Client,
    namespace: &str,
    settings: &AdmissionSettings,
    stores: Stores,
) -> Result<watch::Receiver<bool>, crate::Error> {
    let listener = server::bind(settings.addr)
        .await
        .map_err(|e| crate::Error::Admission(format!("cannot listen on {}: {e}", settings.addr)))?;
    let resolver = Arc::new(CertResolver::default());
    let (loaded_tx, loaded) = watch::channel(false);
    tokio::spawn(webhook_tls::run(
        client,
        namespace.to_owned(),
        settings.tls.clone(),
        resolver.clone(),
        loaded_tx,
    ));
    let webhook = Arc::new(server::Webhook {
        stores,
        mode: settings.mode,
    });
    tokio::spawn(server::serve(
        listener,
        server::tls_config(resolver),
        webhook,
    ));
    Ok(loaded)
}

/// How long a review may wait for the caches to see what the request implies exists (a
/// namespace created a moment ago, a Pod's ServiceAccount). Well under the webhook's
/// timeout; past it the object is admitted as it is and the watch path takes over.
pub(crate) const CACHE_WAIT: Duration = Duration::from_millis(1000);
const CACHE_POLL: Duration = Duration::from_millis(2);

/// One JSON Patch operation.
pub(crate) type Op = Value;

/// The JSON Patch for a ServiceAccount being created in `namespace`, or `None` when regcred
/// has nothing to add.
pub(crate) fn service_account_patch(
    stores: &Stores,
    namespace: &str,
    sa: &ServiceAccount,
) -> Option<Vec<Op>> {
    let mut cached = CachedServiceAccount::from(sa.clone());
    cached.metadata.namespace = Some(namespace.to_owned());
    let plan = service_accounts::plan_for(stores, &cached, Pointing::InPlaceOrDue);
    if !service_accounts::changes(&cached, &plan) {
        return None;
    }
    let mut ops = vec![json!({
        "op": "add",
        "path": "/imagePullSecrets",
        "value": plan.image_pull_secrets,
    })];
    ops.extend(annotation_ops(
        sa.metadata.annotations.as_ref(),
        service_accounts::record_text(&plan),
    ));
    Some(ops)
}

/// The JSON Patch for a Pod being created in `namespace`: its ServiceAccount's planned list,
/// if the Pod lists no Secrets of its own (the API server's ServiceAccount admission has
/// already copied the ServiceAccount's list into a Pod that named none, so a list equal
/// to the ServiceAccount's is not the Pod's own).
pub(crate) fn pod_patch(stores: &Stores, namespace: &str, pod: &Pod) -> Option<Vec<Op>> {
    let spec = pod.spec.as_ref()?;
    let sa = stores
        .service_accounts
        .get(&ObjectRef::new(pod_service_account(pod)).within(namespace))?;
    let own = spec.image_pull_secrets.clone().unwrap_or_default();
    if !own.is_empty() && own != sa.image_pull_secrets {
        return None;
    }
    let plan = service_accounts::plan_for(stores, &sa, Pointing::InPlaceOrDue);
    if plan.image_pull_secrets == own || plan.recorded.is_empty() {
        return None;
    }
    let mut ops = vec![json!({
        "op": "add",
        "path": "/spec/imagePullSecrets",
        "value": plan.image_pull_secrets,
    })];
    // The same record as on a ServiceAccount: which entries regcred chose, and for whom.
    ops.extend(annotation_ops(
        pod.metadata.annotations.as_ref(),
        service_accounts::record_text(&plan),
    ));
    Some(ops)
}

/// The ServiceAccount a Pod runs as.
pub(crate) fn pod_service_account(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| {
            s.service_account_name
                .as_deref()
                .or(s.service_account.as_deref())
        })
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
}

/// Sets (or removes) regcred's record annotation.
fn annotation_ops(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    record: Option<String>,
) -> Vec<Op> {
    let escaped = SA_ENTRIES_ANNOTATION.replace('~', "~0").replace('/', "~1");
    match (annotations, record) {
        (None, None) => vec![],
        (None, Some(record)) => vec![json!({
            "op": "add",
            "path": "/metadata/annotations",
            "value": { SA_ENTRIES_ANNOTATION: record },
        })],
        (Some(_), Some(record)) => vec![json!({
            "op": "add",
            "path": format!("/metadata/annotations/{escaped}"),
            "value": record,
        })],
        (Some(a), None) if a.contains_key(SA_ENTRIES_ANNOTATION) => vec![json!({
            "op": "remove",
            "path": format!("/metadata/annotations/{escaped}"),
        })],
        (Some(_), None) => vec![],
    }
}

/// Waits (bounded by `deadline`) until `known` holds over the caches: the watch events
/// for objects created a moment before this request are milliseconds behind it.
pub(crate) async fn until_cached(deadline: Instant, known: impl Fn() -> bool) -> bool {
    loop {
        if known() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(CACHE_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
    use kube::core::PartialObjectMetaExt;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;
    use regcred_api::{ClusterRegistryCredential, condition_reasons as reasons};

    use super::*;
    use crate::named_secrets::NamedSecrets;
    use crate::signing::Signer;

    /// Caches holding one namespace `team-a` (created a moment ago: no Secret yet), its
    /// ServiceAccount `app`, and a ClusterRegistryCredential `global` writing `pull`
    /// everywhere whose last status has `reason`.
    fn stores(reason: &str) -> Stores {
        let (credentials, _) = reflector::store();
        let (cluster_credentials, mut cluster) = reflector::store();
        let namespaces = crate::namespace_cache::Namespaces::default();
        let (service_accounts, mut sas) = reflector::store();
        let (managed_secrets, _) = reflector::store();
        let (source_secrets, _) = reflector::store();
        let mut credential: ClusterRegistryCredential = serde_json::from_value(json!({
            "metadata": {"name": "global", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"registries": [{"server": "r.example", "static": {"secretRef": {"name": "s", "namespace": "ops"}}}], "secretName": "pull"},
        }))
        .unwrap();
        credential.status = Some(regcred_api::CredentialStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: if reason == reasons::READY {
                    "True"
                } else {
                    "False"
                }
                .into(),
                reason: reason.into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            }],
            ..Default::default()
        });
        cluster.apply_watcher_event(&Event::Apply(credential));
        let meta = ObjectMeta {
            name: Some("team-a".into()),
            ..Default::default()
        };
        namespaces.apply(&Event::Apply(meta.into_response_partial::<Namespace>()));
        sas.apply_watcher_event(&Event::Apply(CachedServiceAccount::from(account())));
        Stores {
            credentials,
            cluster_credentials,
            namespaces,
            service_accounts,
            managed_secrets,
            source_secrets,
            signer: Signer::from_key([7; 32]),
            named: NamedSecrets::default(),
            ready: watch::channel(true).1,
        }
    }

    fn account() -> ServiceAccount {
        serde_json::from_value(json!({"metadata": {"name": "app", "namespace": "team-a"}})).unwrap()
    }

    /// Applies the ops this module makes (adds and removes of whole members) to `value`.
    fn apply(mut value: Value, ops: &[Op]) -> Value {
        for op in ops {
            let path: Vec<String> = op["path"]
                .as_str()
                .unwrap()
                .split('/')
                .skip(1)
                .map(|p| p.replace("~1", "/").replace("~0", "~"))
                .collect();
            let (last, parents) = path.split_last().unwrap();
            let mut target = &mut value;
            for p in parents {
                target = target.get_mut(p).unwrap();
            }
            match op["op"].as_str().unwrap() {
                "add" => target[last.as_str()] = op["value"].clone(),
                "remove" => {
                    target.as_object_mut().unwrap().remove(last);
                }
                other => panic!("{other}"),
            }
        }
        value
    }

    #[test]
    fn admission_writes_what_the_watch_path_then_keeps() {
        let stores = stores(reasons::READY);
        // The watch path waits for the Secret; admission points at the one that is due.
        let watch = service_accounts::plan_for(&stores, &account().into(), Pointing::InPlace);
        assert!(watch.image_pull_secrets.is_empty());
        let ops = service_account_patch(&stores, "team-a", &account()).expect("a patch");
        let admitted: ServiceAccount =
            serde_json::from_value(apply(serde_json::to_value(account()).unwrap(), &ops)).unwrap();
        assert_eq!(
            admitted.image_pull_secrets.as_deref().unwrap()[0].name,
            "pull"
        );
        assert_eq!(
            admitted.metadata.annotations.as_ref().unwrap()[SA_ENTRIES_ANNOTATION],
            r#"{"pull":"ClusterRegistryCredential/global"}"#
        );
        // The watch path, seeing what admission wrote, plans no change: one plan, two paths.
        let cached = CachedServiceAccount::from(admitted.clone());
        let after = service_accounts::plan_for(&stores, &cached, Pointing::InPlace);
        assert!(!service_accounts::changes(&cached, &after));
        // And admission is idempotent (reinvocation changes nothing).
        assert!(service_account_patch(&stores, "team-a", &admitted).is_none());
    }

    #[test]
    fn only_service_accounts_a_reconcile_would_change_are_queued() {
        let mut stores = stores(reasons::READY);
        // The credential's Secret is not in place yet: the watch path has nothing to add.
        let app = CachedServiceAccount::from(account());
        assert!(!service_accounts::needs_reconcile(&stores, &app));
        // An entry regcred added for a credential that is gone: to be removed.
        let mut stale = app.clone();
        stale.image_pull_secrets =
            vec![k8s_openapi::api::core::v1::LocalObjectReference { name: "old".into() }];
        stale.record = Some(r#"{"old":"ClusterRegistryCredential/gone"}"#.into());
        assert!(service_accounts::needs_reconcile(&stores, &stale));
        // In a namespace that is not (or no longer) there: nothing to do.
        stale.metadata.namespace = Some("elsewhere".into());
        assert!(!service_accounts::needs_reconcile(&stores, &stale));
        // Before the caches have listed nothing is judged (all are, once they have).
        stale.metadata.namespace = Some("team-a".into());
        stores.ready = watch::channel(false).1;
        assert!(!service_accounts::needs_reconcile(&stores, &stale));
    }

    #[test]
    fn a_blocked_credential_gets_no_entry_before_its_secret_exists() {
        for reason in [reasons::SOURCE_NOT_FOUND, reasons::EXPIRED] {
            let stores = stores(reason);
            assert!(
                service_account_patch(&stores, "team-a", &account()).is_none(),
                "{reason}"
            );
        }
        let stores = stores(reasons::NO_TARGETS);
        assert!(service_account_patch(&stores, "team-a", &account()).is_some());
        // Not covered: another namespace.
        assert!(service_account_patch(&stores, "elsewhere", &account()).is_none());
    }

    #[test]
    fn pods_get_their_account_s_plan_unless_they_list_their_own() {
        let stores = stores(reasons::READY);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"serviceAccountName": "app", "containers": [{"name": "c", "image": "i"}]},
        }))
        .unwrap();
        let ops = pod_patch(&stores, "team-a", &pod).expect("a patch");
        let admitted = apply(serde_json::to_value(&pod).unwrap(), &ops);
        assert_eq!(
            admitted["spec"]["imagePullSecrets"],
            json!([{"name": "pull"}])
        );
        let mut own = pod.clone();
        own.spec.as_mut().unwrap().image_pull_secrets =
            Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
                name: "theirs".into(),
            }]);
        assert!(pod_patch(&stores, "team-a", &own).is_none());
        let mut other = pod;
        other.spec.as_mut().unwrap().service_account_name = Some("unknown".into());
        assert!(
            pod_patch(&stores, "team-a", &other).is_none(),
            "an account not in the cache"
        );
    }

    #[test]
    fn the_record_annotation_is_added_replaced_or_removed() {
        let text = "{\"pull\":\"ClusterRegistryCredential/x\"}".to_owned();
        let record = Some(text.clone());
        assert_eq!(
            annotation_ops(None, record.clone()),
            vec![json!({"op": "add", "path": "/metadata/annotations",
                "value": {"regcred.io/image-pull-secrets": text.clone()}})]
        );
        let others = BTreeMap::from([("a".to_owned(), "b".to_owned())]);
        assert_eq!(
            annotation_ops(Some(&others), record.clone()),
            vec![
                json!({"op": "add", "path": "/metadata/annotations/regcred.io~1image-pull-secrets",
                "value": text})
            ]
        );
        assert!(annotation_ops(Some(&others), None).is_empty());
        let ours = BTreeMap::from([(SA_ENTRIES_ANNOTATION.to_owned(), "{}".to_owned())]);
        assert_eq!(
            annotation_ops(Some(&ours), None),
            vec![
                json!({"op": "remove", "path": "/metadata/annotations/regcred.io~1image-pull-secrets"})
            ]
        );
    }

    #[test]
    fn a_pod_runs_as_default_unless_it_names_an_account() {
        let mut pod = Pod::default();
        assert_eq!(pod_service_account(&pod), "default");
        pod.spec = Some(Default::default());
        assert_eq!(pod_service_account(&pod), "default");
        pod.spec.as_mut().unwrap().service_account = Some("legacy".into());
        assert_eq!(pod_service_account(&pod), "legacy");
        pod.spec.as_mut().unwrap().service_account_name = Some("app".into());
        assert_eq!(pod_service_account(&pod), "app");
    }
}
