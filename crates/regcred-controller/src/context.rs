//! Shared state of the reconcilers: the API client, the watch caches and the queries over
//! them. Every "what exists" question is answered from a cache, never by a GET.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use regcred_api::{ClusterRegistryCredential, RegistryCredential};
use tokio::sync::watch;

use crate::cached_account::CachedServiceAccount;
use crate::cached_secret::{CachedSecret, PullSecret};
use crate::credential::{Credential, CredentialId, Kind};
use crate::named_secrets::NamedSecrets;
use crate::namespace_cache::Namespaces;
use crate::signing::Signer;
use crate::targets::{Claim, winner};

/// Watch caches. Secrets are cached only when labelled managed or source.
#[derive(Clone)]
pub(crate) struct Stores {
    pub(crate) credentials: Store<RegistryCredential>,
    pub(crate) cluster_credentials: Store<ClusterRegistryCredential>,
    pub(crate) namespaces: Namespaces,
    pub(crate) service_accounts: Store<CachedServiceAccount>,
    /// Secrets labelled managed: regcred's own and look-alikes; [`Stores::managed_secret`]
    /// tells them apart.
    pub(crate) managed_secrets: Store<CachedSecret>,
    pub(crate) source_secrets: Store<Secret>,
    /// Verifies that a labelled Secret really is one regcred wrote.
    pub(crate) signer: Signer,
    /// Secrets of the names credentials write, whoever made them (metadata only).
    pub(crate) named: NamedSecrets,
    /// Turns true once every cache has had its first full list (see [`ReadyGate`]).
    pub(crate) ready: watch::Receiver<bool>,
}

impl Stores {
    /// Waits until every cache has had its first full list, so absence means absence.
    pub(crate) async fn wait_ready(&self) {
        // An error means the sender is gone: shutdown, nothing left to wait for.
        let _ = self.ready.clone().wait_for(|ready| *ready).await;
    }

    /// The live namespaces `credential` covers, sorted.
    pub(crate) fn target_namespaces<C: Credential>(&self, credential: &C) -> Vec<String> {
        let mut names: Vec<String> = match C::KIND {
            Kind::Namespaced => credential
                .meta()
                .namespace
                .iter()
                .filter(|ns| self.namespaces.is_live(ns))
                .cloned()
                .collect(),
            Kind::Cluster => self
                .namespaces
                .live_names(|view| credential.covers_namespace(view)),
        };
        names.sort();
        names
    }

    /// Whether `credential` covers the live namespace `namespace`.
    pub(crate) fn covers<C: Credential>(&self, credential: &C, namespace: &str) -> bool {
        credential.meta().deletion_timestamp.is_none()
            && self
                .namespaces
                .view(namespace, |view| credential.covers_namespace(view))
                .unwrap_or(false)
    }

    /// Every credential that wants a Secret named `secret` in `namespace`.
    pub(crate) fn claims(&self, namespace: &str, secret: &str) -> Vec<Claim> {
        let mut claims = Vec::new();
        self.for_each_covering(namespace, |id, created, secret_name| {
            if secret_name == secret {
                claims.push(Claim { id, created });
            }
        });
        claims
    }

    /// The credential that may write `secret` in `namespace`.
    pub(crate) fn winner(&self, namespace: &str, secret: &str) -> Option<CredentialId> {
        winner(&self.claims(namespace, secret)).map(|c| c.id.clone())
    }

    /// Calls `f(id, created, secret name)` for each credential covering `namespace`.
    pub(crate) fn for_each_covering(
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

    /// Whether the credential with this identity exists and is not being deleted.
    /// Whether the cache still holds this very credential (same UID, not a successor
    /// of the same name).
    pub(crate) fn holds_credential<C: Credential>(&self, credential: &C) -> bool {
        let uid = credential.meta().uid.as_deref();
        self.with_credential(&credential.id(), |m| m.uid.as_deref() == uid)
            .unwrap_or(false)
    }

    pub(crate) fn credential_live(&self, id: &CredentialId) -> bool {
        self.with_credential(id, |c| c.deletion_timestamp.is_none())
            .unwrap_or(false)
    }

    /// Whether the credential `id` covers the ServiceAccount `namespace/name` now.
    pub(crate) fn credential_covers_service_account(
        &self,
        id: &CredentialId,
        namespace: &str,
        name: &str,
        labels: Option<&BTreeMap<String, String>>,
    ) -> bool {
        let covers = |spec: &regcred_api::CredentialSpec| {
            crate::targets::covers_service_account(spec, name, labels)
        };
        match (id.kind, &id.namespace) {
            (Kind::Namespaced, Some(ns)) => self
                .credentials
                .get(&ObjectRef::new(&id.name).within(ns))
                .is_some_and(|c| self.covers(&*c, namespace) && covers(c.spec())),
            (Kind::Cluster, None) => self
                .cluster_credentials
                .get(&ObjectRef::new(&id.name))
                .is_some_and(|c| self.covers(&*c, namespace) && covers(c.spec())),
            _ => false,
        }
    }

    fn with_credential<T>(
        &self,
        id: &CredentialId,
        f: impl FnOnce(&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> T,
    ) -> Option<T> {
        match (id.kind, &id.namespace) {
            (Kind::Namespaced, Some(ns)) => self
                .credentials
                .get(&ObjectRef::new(&id.name).within(ns))
                .map(|c| f(&c.metadata)),
            (Kind::Cluster, None) => self
                .cluster_credentials
                .get(&ObjectRef::new(&id.name))
                .map(|c| f(&c.metadata)),
            _ => None,
        }
    }

    /// The Secret `name` in `namespace`, if regcred wrote it (signature checked: the
    /// label alone proves nothing).
    pub(crate) fn managed_secret(&self, namespace: &str, name: &str) -> Option<Arc<CachedSecret>> {
        self.labelled_secret(namespace, name)
            .filter(|s| self.signer.is_managed(&**s))
    }

    /// A Secret labelled managed, whoever wrote it.
    pub(crate) fn labelled_secret(&self, namespace: &str, name: &str) -> Option<Arc<CachedSecret>> {
        self.managed_secrets
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// Secrets regcred wrote for `owner`.
    pub(crate) fn secrets_owned_by(&self, owner: &CredentialId) -> Vec<Arc<CachedSecret>> {
        let key = owner.to_string();
        self.managed_secrets
            .state()
            .into_iter()
            .filter(|s| s.owner() == Some(key.as_str()) && self.signer.is_managed(&**s))
            .collect()
    }

    /// ServiceAccounts grouped by namespace.
    pub(crate) fn service_accounts_by_namespace(
        &self,
    ) -> HashMap<String, Vec<Arc<CachedServiceAccount>>> {
        let mut by_ns: HashMap<String, Vec<Arc<CachedServiceAccount>>> = HashMap::new();
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
pub(crate) struct ReadyGate {
    pending: Mutex<BTreeSet<&'static str>>,
    open: watch::Sender<bool>,
}

impl ReadyGate {
    pub(crate) fn new(caches: &[&'static str]) -> (Arc<Self>, watch::Receiver<bool>) {
        let (open, ready) = watch::channel(caches.is_empty());
        let pending = Mutex::new(caches.iter().copied().collect());
        (Arc::new(ReadyGate { pending, open }), ready)
    }

    /// Records that `cache` finished its initial list.
    pub(crate) fn listed(&self, cache: &'static str) {
        let mut pending = self.pending.lock().expect("ready gate lock");
        if pending.remove(cache) && pending.is_empty() {
            self.open.send_replace(true);
        }
    }
}

fn created<C: Credential>(c: &C) -> Option<jiff::Timestamp> {
    c.meta().creation_timestamp.as_ref().map(|t| t.0)
}

/// What a backoff counts failures of.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RetryKey {
    /// Failed reconciles of one object (the controllers' error policy).
    Reconcile(ObjectKey),
    /// Failed mints of one credential, counted apart from API errors.
    Mint(CredentialId),
}

/// Per-object retry state for exponential backoff.
#[derive(Default)]
pub(crate) struct Backoff {
    failures: Mutex<BTreeMap<RetryKey, u32>>,
}

impl Backoff {
    const BASE: Duration = Duration::from_secs(1);
    const CAP: Duration = Duration::from_secs(300);

    /// Records a failure of `key` and returns how long to wait before retrying.
    pub(crate) fn next(&self, key: &RetryKey) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock");
        let n = failures.entry(key.clone()).or_default();
        *n = n.saturating_add(1);
        Self::BASE
            .saturating_mul(1 << (*n - 1).min(9))
            .min(Self::CAP)
    }

    /// Forgets the failures of `key` after a success.
    pub(crate) fn reset(&self, key: &RetryKey) {
        self.failures.lock().expect("backoff lock").remove(key);
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
pub(crate) struct CacheLag {
    replaced: Mutex<HashMap<ObjectKey, (Option<String>, Instant)>>,
}

/// A namespaced object of one of the kinds regcred writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ObjectKey {
    pub(crate) kind: &'static str,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl ObjectKey {
    pub(crate) fn secret(namespace: &str, name: &str) -> Self {
        Self::new("Secret", namespace, name)
    }

    pub(crate) fn service_account(namespace: &str, name: &str) -> Self {
        Self::new("ServiceAccount", namespace, name)
    }

    pub(crate) fn new(kind: &'static str, namespace: &str, name: &str) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The key of any namespaced or cluster-scoped object (for the error policy).
    pub(crate) fn of<K: kube::Resource<DynamicType = ()>>(object: &K) -> Self {
        let kind = match K::kind(&()).as_ref() {
            "RegistryCredential" => "RegistryCredential",
            "ClusterRegistryCredential" => "ClusterRegistryCredential",
            "ServiceAccount" => "ServiceAccount",
            _ => "Other",
        };
        let meta = object.meta();
        Self::new(
            kind,
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }
}

impl CacheLag {
    const EXPIRY: Duration = Duration::from_secs(10);

    /// Records that regcred replaced `version` of `key` (`None`: it created `key`).
    pub(crate) fn wrote(&self, key: &ObjectKey, replaced: Option<String>) {
        let mut map = self.replaced.lock().expect("cache lag lock");
        map.insert(key.clone(), (replaced, Instant::now()));
    }

    /// Whether the cache's `version` of `key` is one regcred has already replaced.
    pub(crate) fn is_stale(&self, key: &ObjectKey, version: Option<&str>) -> bool {
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
    pub(crate) fn seen(&self, key: &ObjectKey, version: Option<&str>) {
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

/// Answers worth remembering for a while instead of asking the API server on every
/// reconcile: a same-named Secret found by a refused create (where no watch of that name
/// knows, see [`crate::named_secrets`]), a source found missing or unlabelled.
pub(crate) struct Remembered<V> {
    ttl: Duration,
    entries: Mutex<HashMap<ObjectKey, (V, Instant)>>,
}

impl<V: Clone> Remembered<V> {
    pub(crate) fn new(ttl: Duration) -> Self {
        Remembered {
            ttl,
            entries: Mutex::default(),
        }
    }

    /// The answer recorded for `key` within the last `ttl`.
    pub(crate) fn get(&self, key: &ObjectKey) -> Option<V> {
        let entries = self.entries.lock().expect("remembered lock");
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    pub(crate) fn record(&self, key: ObjectKey, value: V) {
        let mut entries = self.entries.lock().expect("remembered lock");
        entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
        entries.insert(key, (value, Instant::now()));
    }

    pub(crate) fn forget(&self, key: &ObjectKey) {
        self.entries.lock().expect("remembered lock").remove(key);
    }
}

/// What every reconcile gets.
pub(crate) struct Context {
    pub(crate) client: Client,
    pub(crate) stores: Stores,
    pub(crate) recorder: Recorder,
    pub(crate) backoff: Backoff,
    pub(crate) status_writes: crate::status::StatusWrites,
    /// Same-named Secrets that are not regcred's, found by a refused create.
    pub(crate) unmanaged: Remembered<()>,
    /// Sources found missing or unlabelled (a metadata GET each).
    pub(crate) missing_sources: Remembered<crate::source_error::SourceError>,
    pub(crate) cache_lag: Arc<CacheLag>,
    /// How many namespaces one credential writes to at once.
    pub(crate) namespace_concurrency: usize,
    /// Mints ECR tokens with the controller's AWS configuration.
    pub(crate) ecr: regcred_providers::Ecr,
    pub(crate) tokens: crate::tokens::TokenCache,
    /// Whether a `RegistryCredential` may use the controller's own AWS identity.
    pub(crate) allow_controller_aws_identity: bool,
    /// Host suffixes a `RegistryCredential`'s `ecr.endpoint` may name besides AWS's own.
    pub(crate) allowed_ecr_endpoints: Vec<String>,
    /// Whether this replica leads (see [`crate::lease`]): only the leader writes.
    pub(crate) leading: watch::Receiver<bool>,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// False in admission's Pod mode: ServiceAccounts are left alone, Pods get the list.
    pub(crate) patch_service_accounts: bool,
    /// Each credential's Secret content, for the fast path of a single namespace.
    pub(crate) prepared: crate::namespace_writes::Prepared,
    /// The Secrets being written right now.
    pub(crate) writing: crate::namespace_writes::Writing,
    /// Told when a ServiceAccount's reconcile starts (see [`crate::account_queue`]).
    pub(crate) account_queue: Arc<crate::account_queue::AccountQueue>,
}

impl Context {
    pub(crate) fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// What publishing a credential's status needs.
    pub(crate) fn publisher(&self) -> crate::status::Publisher<'_> {
        crate::status::Publisher {
            client: &self.client,
            recorder: &self.recorder,
            writes: &self.status_writes,
        }
    }

    /// Drops the per-credential state of a deleted credential.
    pub(crate) fn forget_credential<C: Credential>(&self, credential: &C) {
        let id = credential.id();
        if let Some(uid) = credential.meta().uid.as_deref() {
            self.tokens.forget(uid);
            self.prepared.forget(uid);
        }
        self.status_writes.forget(&id.to_string());
        self.backoff.reset(&RetryKey::Mint(id));
        self.backoff
            .reset(&RetryKey::Reconcile(ObjectKey::of(credential)));
    }
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
    fn cache_lag_recognises_only_the_replaced_version() {
        let lag = CacheLag::default();
        let key = |name: &str| ObjectKey::secret("ns", name);
        assert!(!lag.is_stale(&key("a"), None));
        lag.wrote(&key("a"), None);
        assert!(
            lag.is_stale(&key("a"), None),
            "created, not in the cache yet"
        );
        assert!(!lag.is_stale(&key("a"), Some("5")), "the cache caught up");
        lag.wrote(&key("a"), Some("5".into()));
        assert!(lag.is_stale(&key("a"), Some("5")));
        assert!(
            !lag.is_stale(&key("a"), Some("6")),
            "a newer version, ours or someone else's"
        );
        assert!(
            !lag.is_stale(&key("a"), Some("5")),
            "forgotten once the cache moved on"
        );
        lag.wrote(&key("b"), None);
        lag.seen(&key("b"), Some("7"));
        assert!(!lag.is_stale(&key("b"), None), "delivered, then deleted");
        lag.wrote(&key("c"), Some("3".into()));
        lag.seen(&key("c"), Some("3"));
        assert!(
            lag.is_stale(&key("c"), Some("3")),
            "a late event of the replaced version"
        );
        lag.seen(&key("c"), Some("4"));
        assert!(!lag.is_stale(&key("c"), Some("3")));
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let b = Backoff::default();
        let a = RetryKey::Reconcile(ObjectKey::service_account("ns", "a"));
        let mint = RetryKey::Mint(CredentialId {
            kind: Kind::Cluster,
            namespace: None,
            name: "a".into(),
        });
        assert_eq!(b.next(&a), Duration::from_secs(1));
        assert_eq!(b.next(&a), Duration::from_secs(2));
        assert_eq!(b.next(&a), Duration::from_secs(4));
        assert_eq!(b.next(&mint), Duration::from_secs(1), "counted apart");
        for _ in 0..20 {
            b.next(&a);
        }
        assert_eq!(b.next(&a), Duration::from_secs(300));
        b.reset(&a);
        assert_eq!(b.next(&a), Duration::from_secs(1));
    }

    #[test]
    fn secrets_and_service_accounts_of_one_name_are_different_keys() {
        let lag = CacheLag::default();
        lag.wrote(&ObjectKey::secret("ns", "x"), Some("5".into()));
        assert!(!lag.is_stale(&ObjectKey::service_account("ns", "x"), Some("5")));
        assert!(lag.is_stale(&ObjectKey::secret("ns", "x"), Some("5")));
    }

    #[test]
    fn remembered_answers_expire() {
        let r = Remembered::new(Duration::from_millis(50));
        let key = ObjectKey::secret("ns", "x");
        r.record(key.clone(), 1);
        assert_eq!(r.get(&key), Some(1));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(r.get(&key), None);
        r.record(key.clone(), 2);
        r.forget(&key);
        assert_eq!(r.get(&key), None);
    }
}
