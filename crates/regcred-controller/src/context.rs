//! Shared state of the reconcilers: the API client, the watch caches and the queries over
//! them. Every "what exists" question is answered from a cache, never by a GET.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use regcred_api::names::OWNER_ANNOTATION;
use regcred_api::{ClusterRegistryCredential, RegistryCredential};
use tokio::sync::watch;

use crate::credential::{Credential, CredentialId, Kind, NamespaceView};
use crate::targets::{Claim, winner};

/// Watch caches. Secrets are cached only when labelled managed or source.
#[derive(Clone)]
pub struct Stores {
    pub credentials: Store<RegistryCredential>,
    pub cluster_credentials: Store<ClusterRegistryCredential>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub service_accounts: Store<ServiceAccount>,
    pub managed_secrets: Store<Secret>,
    pub source_secrets: Store<Secret>,
    /// Turns true once every cache has had its first full list (see [`ReadyGate`]).
    pub ready: watch::Receiver<bool>,
}

impl Stores {
    /// Waits until every cache has had its first full list, so absence means absence.
    pub async fn wait_ready(&self) {
        // An error means the sender is gone: shutdown, nothing left to wait for.
        let _ = self.ready.clone().wait_for(|ready| *ready).await;
    }

    /// A namespace that exists and is not being deleted.
    pub fn live_namespace(&self, name: &str) -> Option<Arc<PartialObjectMeta<Namespace>>> {
        self.namespaces
            .get(&ObjectRef::new(name))
            .filter(|ns| ns.metadata.deletion_timestamp.is_none())
    }

    /// The live namespaces `credential` covers, sorted.
    pub fn target_namespaces<C: Credential>(&self, credential: &C) -> Vec<String> {
        let mut names: Vec<String> = match C::KIND {
            Kind::Namespaced => credential
                .meta()
                .namespace
                .iter()
                .filter(|ns| self.live_namespace(ns).is_some())
                .cloned()
                .collect(),
            Kind::Cluster => self
                .namespaces
                .state()
                .iter()
                .filter(|ns| ns.metadata.deletion_timestamp.is_none())
                .filter_map(|ns| {
                    let name = ns.metadata.name.as_deref()?;
                    let view = NamespaceView {
                        name,
                        labels: ns.metadata.labels.as_ref(),
                    };
                    credential.covers_namespace(&view).then(|| name.to_owned())
                })
                .collect(),
        };
        names.sort();
        names
    }

    /// Whether `credential` covers the live namespace `namespace`.
    pub fn covers<C: Credential>(&self, credential: &C, namespace: &str) -> bool {
        let Some(ns) = self.live_namespace(namespace) else {
            return false;
        };
        let view = NamespaceView {
            name: namespace,
            labels: ns.metadata.labels.as_ref(),
        };
        credential.meta().deletion_timestamp.is_none() && credential.covers_namespace(&view)
    }

    /// Every credential that wants a Secret named `secret` in `namespace`.
    pub fn claims(&self, namespace: &str, secret: &str) -> Vec<Claim> {
        let mut claims = Vec::new();
        self.for_each_covering(namespace, |id, created, secret_name| {
            if secret_name == secret {
                claims.push(Claim { id, created });
            }
        });
        claims
    }

    /// The credential that may write `secret` in `namespace`.
    pub fn winner(&self, namespace: &str, secret: &str) -> Option<CredentialId> {
        winner(&self.claims(namespace, secret)).map(|c| c.id.clone())
    }

    /// Calls `f(id, created, secret name)` for each credential covering `namespace`.
    pub fn for_each_covering(
        &self,
        namespace: &str,
        mut f: impl FnMut(CredentialId, Option<jiff::Timestamp>, String),
    ) {
        for c in self.credentials.state() {
            if c.metadata.namespace.as_deref() == Some(namespace) && self.covers(&*c, namespace) {
                f(c.id(), created(&*c), c.secret_name());
            }
        }
        for c in self.cluster_credentials.state() {
            if self.covers(&*c, namespace) {
                f(c.id(), created(&*c), c.secret_name());
            }
        }
    }

    /// Whether the credential with this identity exists (in the cache).
    pub fn credential_exists(&self, id: &CredentialId) -> bool {
        match (id.kind, &id.namespace) {
            (Kind::Namespaced, Some(ns)) => self
                .credentials
                .get(&ObjectRef::new(&id.name).within(ns))
                .is_some(),
            (Kind::Cluster, None) => self
                .cluster_credentials
                .get(&ObjectRef::new(&id.name))
                .is_some(),
            _ => false,
        }
    }

    /// The managed Secret `name` in `namespace`, if regcred manages one there.
    pub fn managed_secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.managed_secrets
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// Managed Secrets that record `owner` as their owner.
    pub fn secrets_owned_by(&self, owner: &CredentialId) -> Vec<Arc<Secret>> {
        let key = owner.to_string();
        self.managed_secrets
            .state()
            .into_iter()
            .filter(|s| owner_of(s).as_deref() == Some(key.as_str()))
            .collect()
    }

    /// ServiceAccounts grouped by namespace.
    pub fn service_accounts_by_namespace(&self) -> HashMap<String, Vec<Arc<ServiceAccount>>> {
        let mut by_ns: HashMap<String, Vec<Arc<ServiceAccount>>> = HashMap::new();
        for sa in self.service_accounts.state() {
            if let Some(ns) = sa.metadata.namespace.clone() {
                by_ns.entry(ns).or_default().push(sa);
            }
        }
        by_ns
    }
}

/// Opens once every cache has had its first full list.
///
/// `Store::wait_until_ready` wakes only the last of several concurrent waiters (its oneshot
/// receiver keeps one waker, and each controller already waits on its own store), so the
/// reconcilers wait here instead: each watch reports its first `InitDone`, and a watch
/// channel wakes every waiter.
pub struct ReadyGate {
    pending: Mutex<BTreeSet<&'static str>>,
    open: watch::Sender<bool>,
}

impl ReadyGate {
    pub fn new(caches: &[&'static str]) -> (Arc<Self>, watch::Receiver<bool>) {
        let (open, ready) = watch::channel(caches.is_empty());
        let pending = Mutex::new(caches.iter().copied().collect());
        (Arc::new(ReadyGate { pending, open }), ready)
    }

    /// Records that `cache` finished its initial list.
    pub fn listed(&self, cache: &'static str) {
        let mut pending = self.pending.lock().expect("ready gate lock");
        if pending.remove(cache) && pending.is_empty() {
            self.open.send_replace(true);
        }
    }
}

/// The owner key a managed Secret records.
pub fn owner_of(secret: &Secret) -> Option<String> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(OWNER_ANNOTATION)
        .cloned()
}

fn created<C: Credential>(c: &C) -> Option<jiff::Timestamp> {
    c.meta().creation_timestamp.as_ref().map(|t| t.0)
}

/// Per-object retry state for exponential backoff.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<BTreeMap<String, u32>>,
}

impl Backoff {
    const BASE: Duration = Duration::from_secs(1);
    const CAP: Duration = Duration::from_secs(300);

    /// Records a failure of `key` and returns how long to wait before retrying.
    pub fn next(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock");
        let n = failures.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        Self::BASE
            .saturating_mul(1 << (*n - 1).min(9))
            .min(Self::CAP)
    }

    /// Forgets the failures of `key` after a success.
    pub fn reset(&self, key: &str) {
        self.failures.lock().expect("backoff lock").remove(key);
    }
}

/// When each credential's status was last written, to space out writes.
#[derive(Default)]
pub struct StatusWrites {
    last: Mutex<HashMap<String, Instant>>,
}

impl StatusWrites {
    /// How long to wait before writing `key`'s status again, if `interval` has not passed.
    pub fn too_soon(&self, key: &str, interval: Duration) -> Option<Duration> {
        let last = self.last.lock().expect("status writes lock");
        let elapsed = last.get(key)?.elapsed();
        (elapsed < interval).then(|| interval - elapsed)
    }

    pub fn record(&self, key: &str) {
        self.last
            .lock()
            .expect("status writes lock")
            .insert(key.to_owned(), Instant::now());
    }
}

/// Versions of objects the caches still hold although regcred has already replaced them.
///
/// After a write, the watch delivers the new version a moment later; a reconcile in
/// between would see the old one and write again (a needless request, a conflict, or for
/// a just-created Secret a false "exists but is not regcred's"). Each write records the
/// version it replaced (`None` for a create); while the cache still shows exactly that,
/// the reconcile waits for the watch event instead of acting. Entries expire, so a lost
/// event cannot block anything for long.
#[derive(Default)]
pub struct CacheLag {
    replaced: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl CacheLag {
    const EXPIRY: Duration = Duration::from_secs(10);

    /// Records that regcred replaced `version` of `key` (`None`: it created `key`).
    pub fn wrote(&self, key: &str, replaced: Option<String>) {
        let mut map = self.replaced.lock().expect("cache lag lock");
        map.insert(key.to_owned(), (replaced, Instant::now()));
    }

    /// Whether the cache's `version` of `key` is one regcred has already replaced.
    pub fn is_stale(&self, key: &str, version: Option<&str>) -> bool {
        let mut map = self.replaced.lock().expect("cache lag lock");
        match map.get(key) {
            Some((replaced, at))
                if at.elapsed() < Self::EXPIRY && replaced.as_deref() == version =>
            {
                true
            }
            Some(_) => {
                // The cache moved on (or the entry expired): forget it.
                map.remove(key);
                false
            }
            None => false,
        }
    }

    /// The watch delivered `version` of `key` (`None`: its deletion). Only a version other
    /// than the replaced one means the cache has caught up: an older event still in flight
    /// (the object's creation, say) must not clear the mark.
    pub fn seen(&self, key: &str, version: Option<&str>) {
        let mut map = self.replaced.lock().expect("cache lag lock");
        if version.is_none()
            || map
                .get(key)
                .is_some_and(|(replaced, _)| replaced.as_deref() != version)
        {
            map.remove(key);
        }
    }
}

/// Secrets found to exist without being regcred's: regcred does not watch them (it caches
/// only its own), so instead of asking again on every reconcile it asks again after
/// [`UnmanagedSecrets::RETRY`] (or on a refresh request).
#[derive(Default)]
pub struct UnmanagedSecrets {
    refused: Mutex<HashMap<(String, String), Instant>>,
}

impl UnmanagedSecrets {
    pub const RETRY: Duration = Duration::from_secs(300);

    /// Whether creating `namespace/name` was refused within [`Self::RETRY`].
    pub fn known(&self, namespace: &str, name: &str) -> bool {
        let refused = self.refused.lock().expect("unmanaged lock");
        refused
            .get(&(namespace.to_owned(), name.to_owned()))
            .is_some_and(|at| at.elapsed() < Self::RETRY)
    }

    pub fn record(&self, namespace: &str, name: &str) {
        let mut refused = self.refused.lock().expect("unmanaged lock");
        refused.insert((namespace.to_owned(), name.to_owned()), Instant::now());
    }
}

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub recorder: Recorder,
    pub backoff: Backoff,
    pub status_writes: StatusWrites,
    pub unmanaged: UnmanagedSecrets,
    pub cache_lag: Arc<CacheLag>,
    /// How many namespaces one credential writes to at once.
    pub namespace_concurrency: usize,
    /// Mints ECR tokens with the controller's AWS configuration.
    pub ecr: regcred_providers::Ecr,
    pub tokens: crate::minting::TokenCache,
    /// Whether a `RegistryCredential` may use the controller's own AWS identity.
    pub allow_controller_aws_identity: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_opens_when_the_last_cache_is_listed() {
        let (gate, ready) = ReadyGate::new(&["a", "b"]);
        gate.listed("a");
        gate.listed("a");
        assert!(!*ready.borrow());
        gate.listed("b");
        assert!(*ready.borrow());
    }

    #[test]
    fn status_writes_are_spaced() {
        let writes = StatusWrites::default();
        assert_eq!(writes.too_soon("a", Duration::from_secs(1)), None);
        writes.record("a");
        let wait = writes
            .too_soon("a", Duration::from_secs(1))
            .expect("too soon");
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(500));
        assert_eq!(writes.too_soon("a", Duration::ZERO), None);
        assert_eq!(writes.too_soon("b", Duration::from_secs(1)), None);
    }

    #[test]
    fn cache_lag_recognises_only_the_replaced_version() {
        let lag = CacheLag::default();
        assert!(!lag.is_stale("ns/a", None));
        lag.wrote("ns/a", None);
        assert!(lag.is_stale("ns/a", None), "created, not in the cache yet");
        assert!(!lag.is_stale("ns/a", Some("5")), "the cache caught up");
        lag.wrote("ns/a", Some("5".into()));
        assert!(lag.is_stale("ns/a", Some("5")));
        assert!(
            !lag.is_stale("ns/a", Some("6")),
            "a newer version, ours or someone else's"
        );
        assert!(
            !lag.is_stale("ns/a", Some("5")),
            "forgotten once the cache moved on"
        );
        lag.wrote("ns/b", None);
        lag.seen("ns/b", Some("7"));
        assert!(!lag.is_stale("ns/b", None), "delivered, then deleted");
        lag.wrote("ns/c", Some("3".into()));
        lag.seen("ns/c", Some("3"));
        assert!(
            lag.is_stale("ns/c", Some("3")),
            "a late event of the replaced version"
        );
        lag.seen("ns/c", Some("4"));
        assert!(!lag.is_stale("ns/c", Some("3")));
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let b = Backoff::default();
        assert_eq!(b.next("a"), Duration::from_secs(1));
        assert_eq!(b.next("a"), Duration::from_secs(2));
        assert_eq!(b.next("a"), Duration::from_secs(4));
        assert_eq!(b.next("b"), Duration::from_secs(1));
        for _ in 0..20 {
            b.next("a");
        }
        assert_eq!(b.next("a"), Duration::from_secs(300));
        b.reset("a");
        assert_eq!(b.next("a"), Duration::from_secs(1));
    }
}
